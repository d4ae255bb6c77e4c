"""index.html of the gallery: one self-contained page (inline CSS, JS and card data).

The cards are built in the browser from the inline JSON, one page of `page_size` at a time,
so a page of 15,000 instances stays responsive; images load lazily. Every card is an element
`.card[data-gt-id]`. Controls: sort key and direction, filters on class, occlusion bucket,
amodal_source, fallback and an IoU range; a checkbox switches the attention overlay.
"""

from __future__ import annotations

import html
import json

SMOKE_TEXT = "SMOKE RUN: random weights, not results"

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#111}
header{position:sticky;top:0;background:#fff;padding:8px 12px;border-bottom:1px solid #ccc;z-index:2}
.smoke{background:#b00020;color:#fff;font-weight:bold;padding:6px 12px;font-size:18px}
.controls label{margin-right:10px;font-size:14px;white-space:nowrap}
.legend span{display:inline-block;margin-right:12px;font-size:13px}
.legend i{display:inline-block;width:18px;height:4px;margin-right:4px;vertical-align:middle}
#cards{display:flex;flex-wrap:wrap;gap:10px;padding:10px}
.card{background:#fff;border:1px solid #bbb;border-radius:4px;width:250px;padding:6px;font-size:13px;line-height:1.35}
.card .im{position:relative;width:224px;height:224px;margin:auto;background:#222}
.card .im img{position:absolute;left:0;top:0;max-width:224px;max-height:224px}
.card .att{opacity:.55;pointer-events:none}
body.noatt .card .att{display:none}
.card b{font-weight:600}.bad{color:#b00020}.flag{background:#ffe08a;padding:0 3px;border-radius:2px}
.pager{padding:6px 12px}
"""

_JS = r"""
const D = JSON.parse(document.getElementById('gallery-data').textContent);
const st = {page: 0};
const $ = id => document.getElementById(id);
function fmt(v){ return v === null ? '–' : v.toFixed(3); }
function options(sel, values){ for (const v of values){ const o=document.createElement('option'); o.value=v; o.textContent=v===''?'(none)':v; sel.appendChild(o);} }
function uniq(k){ return [...new Set(D.cards.map(c => c[k]))].sort(); }
options($('f-category'), uniq('category')); options($('f-bucket'), uniq('bucket'));
options($('f-amodal_source'), uniq('amodal_source')); options($('f-fallback'), uniq('fallback'));
function filtered(){
  const lo = parseFloat($('f-iou-min').value), hi = parseFloat($('f-iou-max').value);
  const key = $('f-iou-key').value;
  let out = D.cards.filter(c => ['category','bucket','amodal_source','fallback'].every(
      k => $('f-'+k).value === '*' || c[k] === $('f-'+k).value)
    && (isNaN(lo) || (c[key] !== null && c[key] >= lo)) && (isNaN(hi) || (c[key] !== null && c[key] <= hi)));
  const s = $('sort').value, dir = $('dir').value === 'asc' ? 1 : -1;
  out.sort((a, b) => { const x=a[s], y=b[s];
    if (x === y) return a.gt_id - b.gt_id; if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * dir; });
  return out;
}
function card(c){
  const e = document.createElement('div'); e.className = 'card'; e.dataset.gtId = c.gt_id;
  const flags = [];
  if (c.fallback) flags.push('<span class="flag">points fallback: '+c.fallback+'</span>');
  if (c.exemplar_fallback) flags.push('<span class="flag">exemplar fallback</span>');
  if (c.occlusion_error) flags.push('<span class="flag">answer not parsed</span>');
  e.innerHTML = (D.smoke ? '<div class="smoke">SMOKE</div>' : '') +
    '<div class="im"><img loading="lazy" src="'+c.crop+'" alt="instance '+c.gt_id+'">' +
    '<img class="att" loading="lazy" src="'+c.attention+'" alt=""></div>' +
    '<div><b>'+esc(c.category)+'</b> · instance '+c.gt_id+' · image '+c.image_id+'</div>' +
    '<div>IoU amodal <b class="'+(c.iou_amodal<0.5?'bad':'')+'">'+fmt(c.iou_amodal)+'</b> · visible <b>'+fmt(c.iou_visible)+'</b> · hidden part '+fmt(c.iou_occluded)+'</div>' +
    '<div>occlusion '+c.occlusion_rate.toFixed(2)+' ('+c.bucket+')</div>' +
    '<div>VLM occluders: '+(c.occluders.length ? esc(c.occluders.join(', ')) : '<i>none named</i>')+'</div>' +
    '<div>amodal_source: '+esc(c.amodal_source)+' · occluders from: '+esc(c.occluder_source)+'</div>' +
    '<div>'+(flags.join(' ') || 'no fallback')+'</div>';
  return e;
}
function esc(s){ return String(s).replace(/[&<>"]/g, ch => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[ch])); }
function render(){
  const list = filtered(), n = D.page_size, pages = Math.max(1, Math.ceil(list.length / n));
  st.page = Math.min(st.page, pages - 1);
  const box = $('cards'); box.replaceChildren(...list.slice(st.page*n, st.page*n+n).map(card));
  $('count').textContent = list.length + ' of ' + D.cards.length + ' cards';
  $('count').dataset.matching = list.length;
  $('pageinfo').textContent = 'page ' + (st.page+1) + ' / ' + pages;
}
for (const el of document.querySelectorAll('.controls select, .controls input:not(#att)'))
  el.addEventListener('change', () => { st.page = 0; render(); });
$('att').addEventListener('change', e => document.body.classList.toggle('noatt', !e.target.checked));
$('prev').onclick = () => { st.page = Math.max(0, st.page-1); render(); };
$('next').onclick = () => { st.page += 1; render(); };
render();
"""


def render_page(cards: list[dict], *, smoke: bool, page_size: int, title: str, summary: str) -> str:
    """The whole index.html for `cards` (dicts of `stage.card_fields`, worst first)."""
    data = json.dumps({"cards": cards, "smoke": smoke, "page_size": page_size}, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # never closes the script element
    smoke_bar = f'<div class="smoke" id="smoke">{SMOKE_TEXT}</div>' if smoke else ""
    sort_keys = ["iou_amodal", "iou_visible", "iou_occluded", "occlusion_rate", "category", "gt_id"]
    sort_opts = "".join(f'<option value="{k}">{k}</option>' for k in sort_keys)
    iou_opts = "".join(f'<option value="{k}">{k}</option>' for k in sort_keys[:3])
    legend = "".join(f'<span><i style="background:{c}"></i>{n}</span>' for n, c in
                     [("GT amodal", "#fff;border:1px solid #888"), ("GT visible", "#ffd700"),
                      ("pred amodal", "#f0f"), ("pred visible", "#00c800"),
                      ("positive point", "#00dc00"), ("negative point", "#f00")])
    selects = "".join(f'<label>{k} <select id="f-{k}"><option value="*">all</option></select></label>'
                      for k in ("category", "bucket", "amodal_source", "fallback"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
{smoke_bar}
<header><div><b>{html.escape(title)}</b> · {html.escape(summary)} · <span id="count"></span></div>
<div class="controls">
<label>sort <select id="sort">{sort_opts}</select></label>
<label><select id="dir"><option value="asc">ascending</option><option value="desc">descending</option></select></label>
{selects}
<label><select id="f-iou-key">{iou_opts}</select> from <input id="f-iou-min" type="number" step="0.05" min="0" max="1" size="4"> to <input id="f-iou-max" type="number" step="0.05" min="0" max="1" size="4"></label>
<label><input type="checkbox" id="att" checked> attention overlay</label>
</div>
<div class="legend">{legend}</div></header>
<div class="pager"><button id="prev">&larr; previous</button> <span id="pageinfo"></span> <button id="next">next &rarr;</button></div>
<div id="cards"></div>
<script type="application/json" id="gallery-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""
