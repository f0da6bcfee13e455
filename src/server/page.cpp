// The chat page served at `/`: plain HTML and JavaScript, no external resources. It streams an
// answer from /v1/chat/completions and draws that request's routing map (layers x KV heads: full
// attention dark, streaming light, XAttention mid) from the final chunk's "elastic" field.
#include "server/server.h"

namespace elastic::server {

const char* chat_page_html() {
    return R"PAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>elastic serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
main{max-width:980px;margin:0 auto;padding:16px;display:flex;gap:20px;flex-wrap:wrap}
#chat{flex:1 1 520px}#side{flex:0 0 360px}
.msg{white-space:pre-wrap;padding:8px 12px;border-radius:8px;margin:8px 0}
.user{background:#dfe9f5}.assistant{background:#fff;border:1px solid #ddd}
form{display:flex;gap:8px}textarea{flex:1;height:60px;font:inherit}button{font:inherit;padding:0 16px}
#stats{font-size:13px;color:#555;margin-top:6px}
canvas{border:1px solid #ccc;background:#fff;image-rendering:pixelated}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}
</style></head><body><main>
<section id="chat"><h2>elastic serve</h2><div id="log"></div>
<form id="f"><textarea id="q" placeholder="Ask something"></textarea><button id="send">Send</button></form>
<div id="stats"></div></section>
<section id="side"><h3>Routing map of the last answer</h3>
<div class="legend"><span style="background:#1f3b73"></span>full<span style="background:#9cc3e6"></span>streaming<span style="background:#e3a33b"></span>XAttention</div>
<canvas id="map" width="320" height="320" data-rendered="0"></canvas>
<div id="mapinfo" style="font-size:13px;color:#555"></div></section>
</main><script>
const history = [];
const log = document.getElementById('log');
function add(role, text){const d=document.createElement('div');d.className='msg '+role;d.textContent=text;log.appendChild(d);return d;}
function drawMap(el){
  const rows = el.routing || [], c = document.getElementById('map'), g = c.getContext('2d');
  const L = rows.length, H = L ? rows[0].length : 0;
  if(!L){return;}
  const cell = Math.max(2, Math.floor(Math.min(320 / H, 480 / L)));
  c.width = H * cell; c.height = L * cell;
  const col = {F:'#1f3b73', S:'#9cc3e6', X:'#e3a33b'};
  for(let l=0;l<L;l++) for(let h=0;h<H;h++){g.fillStyle=col[rows[l][h]]||'#f00';g.fillRect(h*cell,l*cell,cell-(cell>3?1:0),cell-(cell>3?1:0));}
  c.dataset.rendered = String(L*H);
  document.getElementById('mapinfo').textContent = `${el.attention}: ${L} layers (rows, first at the top) x ${H} KV heads (columns), ${el.heads_sparse} sparse / ${el.heads_full} full, Ω_MSR ${el.omega_msr.toFixed(3)}, KV cache ${(el.kv_bytes/1048576).toFixed(2)} MiB`;
}
async function ask(text){
  history.push({role:'user', content:text}); add('user', text);
  const out = add('assistant', ''); out.id = 'answer-' + history.length; out.dataset.done = '0';
  const t0 = performance.now(); let first = 0, n = 0, el = null;
  const r = await fetch('/v1/chat/completions', {method:'POST', headers:{'Content-Type':'application/json'},
    body: JSON.stringify({messages: history, stream: true, temperature: 0, max_tokens: 256})});
  if(!r.ok){out.textContent = 'error: ' + (await r.text()); out.dataset.done='error'; return;}
  const rd = r.body.getReader(), dec = new TextDecoder(); let buf = '';
  for(;;){
    const {value, done} = await rd.read(); if(done) break;
    buf += dec.decode(value, {stream:true});
    let i; while((i = buf.indexOf('\n\n')) >= 0){
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if(!ev.startsWith('data: ')) continue; const data = ev.slice(6); if(data === '[DONE]') continue;
      const j = JSON.parse(data);
      if(j.error){out.textContent += '\n[error: ' + j.error.message + ']'; continue;}
      const ch = j.choices && j.choices[0];
      if(ch && ch.delta && ch.delta.content){ if(!first) first = performance.now(); out.textContent += ch.delta.content; n++; }
      if(j.elastic) el = j.elastic;
    }
  }
  history.push({role:'assistant', content: out.textContent});
  out.dataset.done = '1';
  if(el) drawMap(el);
  document.getElementById('stats').textContent = `first token ${((first||performance.now())-t0).toFixed(0)} ms, ${n} chunks in ${((performance.now()-t0)/1000).toFixed(1)} s`;
}
document.getElementById('f').addEventListener('submit', e => {e.preventDefault(); const q = document.getElementById('q'); const t = q.value.trim(); if(t){q.value=''; ask(t);}});
document.getElementById('q').addEventListener('keydown', e => {if(e.key==='Enter' && !e.shiftKey){e.preventDefault(); document.getElementById('f').requestSubmit();}});
</script></body></html>
)PAGE";
}

}  // namespace elastic::server
