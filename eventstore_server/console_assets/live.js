// The live page: new events from the server-sent feed, newest first, pausable.
const rows = document.getElementById('rows'), state = document.getElementById('state');
let paused = false;
document.getElementById('pause').addEventListener('click', (e) => {
  paused = !paused; e.target.textContent = paused ? 'Resume' : 'Pause';
  state.textContent = paused ? 'paused' : 'live';
});
const source = new EventSource(document.body.dataset.feed);
source.onopen = () => { if (!paused) state.textContent = 'live'; };
source.onerror = () => { state.textContent = 'reconnecting'; };
source.onmessage = (m) => {
  if (paused) return;
  const e = JSON.parse(m.data), tr = document.createElement('tr');
  for (const value of [e.position, e.recorded_at, e.stream + '@' + e.version, e.type, e.data]) {
    const td = document.createElement('td'); td.textContent = value; tr.appendChild(td);
  }
  rows.prepend(tr);
  while (rows.children.length > Number(document.body.dataset.rows)) rows.lastChild.remove();
};
