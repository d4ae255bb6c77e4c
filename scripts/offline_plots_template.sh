#!/usr/bin/env bash
# An HTML template for `dvc plots show` that renders with no network: DVC's default page loads
# vega, vega-lite and vega-embed from a CDN (dvc_render/vega.py); this writes
# .dvc/plots_offline.html (git-ignored) with the same three versions inline, from npm.
#   bash scripts/offline_plots_template.sh
#   dvc plots show --html-template .dvc/plots_offline.html    # dvc_plots/index.html, offline
# The template has no {scripts} placeholder, so DVC adds no CDN script tags.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/.dvc/plots_offline.html"
versions=(vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2)   # the ones DVC's default page names
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
command -v npm >/dev/null || { echo "npm is needed to fetch ${versions[*]} (Debian: apt-get install npm)"; exit 1; }
(cd "$work" && npm pack --silent "${versions[@]}" >/dev/null)
{
    printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC Plot</title>\n'
    for v in "${versions[@]}"; do
        name="${v%@*}"
        tar -xzf "$work/$name-${v#*@}.tgz" -C "$work" "package/build/$name.min.js"
        printf '<script>/* %s */\n' "$v"
        cat "$work/package/build/$name.min.js"
        printf '\n</script>\n'
    done
    printf '<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "written: $out ($(du -k "$out" | cut -f1) kB)"
