// KernelCI viewer: small conveniences on top of server-rendered pages (every page works
// without this script). Filter menus apply on change; in the log viewer, `n`/`p` (or the
// buttons) jump to the next/previous error line.
(function () {
  for (const sel of document.querySelectorAll('form.filters select')) {
    sel.addEventListener('change', () => sel.form.submit());
  }
  const errors = Array.from(document.querySelectorAll('pre.log .line.error'));
  if (errors.length === 0) return;
  let at = -1;
  const go = (step) => {
    at = (at + step + errors.length) % errors.length;
    errors[at].scrollIntoView({ block: 'center' });
    for (const e of errors) e.classList.remove('focus');
    errors[at].classList.add('focus');
  };
  const bar = document.createElement('p');
  bar.innerHTML = '<button type="button" id="prev-error">previous error</button> <button type="button" id="next-error">next error</button>';
  const log = document.querySelector('pre.log');
  log.parentNode.insertBefore(bar, log);
  document.getElementById('next-error').addEventListener('click', () => go(1));
  document.getElementById('prev-error').addEventListener('click', () => go(-1));
  document.addEventListener('keydown', (ev) => {
    if (ev.target.tagName === 'INPUT' || ev.target.tagName === 'TEXTAREA') return;
    if (ev.key === 'n') go(1);
    if (ev.key === 'p') go(-1);
  });
})();
