"""Exports of a finished run for other viewers (`vlmsam export --to FORMAT DIR`).

fiftyone   a FiftyOneDataset folder (`pipeline.export.fiftyone`), written without FiftyOne
"""
