// The apikeys admin console's only script (served from this origin; the Content-Security-Policy
// allows no other). It copies credentials, and on OK removes them from the page and replaces the
// history entry, so neither the DOM nor Back shows them again.
"use strict";

function copyText(text, button) {
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => { button.textContent = "Select and copy"; });
  } else {
    button.textContent = "Select and copy";
  }
}

document.addEventListener("click", (event) => {
  const copy = event.target.closest("button[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    if (source) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copyText(source.textContent, copy);
    }
    return;
  }
  const ok = event.target.closest("a[data-clear]");
  if (ok) {
    event.preventDefault();
    const shown = document.getElementById(ok.dataset.clear);
    if (shown) { shown.remove(); }
    window.getSelection().removeAllRanges();
    window.location.replace(ok.getAttribute("href"));
  }
});
