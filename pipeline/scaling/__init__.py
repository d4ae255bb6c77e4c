"""Running the extract and decode stages as several processes: shards, device pinning,
merging the part files, and the launcher of the DVC stages."""
