// Copy-to-clipboard for the finished transcript (the button stays hidden without JavaScript).
(function () {
  "use strict";
  var button = document.getElementById("copy");
  if (!button) { return; }
  var target = document.getElementById(button.getAttribute("data-target"));
  var label = button.textContent;
  button.hidden = false;

  function show(text) {
    button.textContent = text;
    setTimeout(function () { button.textContent = label; }, 1500);
  }

  function copyBySelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var copied = false;
    try { copied = document.execCommand("copy"); } catch (ignored) { copied = false; }
    document.body.removeChild(area);
    return copied;
  }

  button.addEventListener("click", function () {
    var text = target ? target.textContent : "";
    var fallback = function () {
      if (copyBySelection(text)) { show("Copied"); return; }
      if (target && window.getSelection) {  // leave the text selected for Ctrl+C
        var range = document.createRange();
        range.selectNodeContents(target);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
      }
      show("Selected: press Ctrl+C");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { show("Copied"); }, fallback);
    } else {
      fallback();
    }
  });
})();
