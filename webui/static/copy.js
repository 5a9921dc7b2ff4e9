// Copy buttons: <button data-copy="text">. The clipboard API needs a secure
// context (127.0.0.1 is one; a plain-http LAN address is not), so fall back
// to selecting a hidden text area.
document.addEventListener("click", function (ev) {
  var b = ev.target.closest("button[data-copy]");
  if (!b) return;
  var text = b.getAttribute("data-copy");
  var done = function () {
    var old = b.textContent;
    b.textContent = "Copied";
    setTimeout(function () { b.textContent = old; }, 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
    return;
  }
  var ta = document.createElement("textarea");
  ta.value = text;
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.appendChild(ta);
  ta.select();
  try { document.execCommand("copy"); done(); } finally { document.body.removeChild(ta); }
});
