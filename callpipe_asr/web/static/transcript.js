// Copy-to-clipboard for the finished transcript (the button stays hidden without JavaScript).
(function () {
  "use strict";
  var button = document.getElementById("copy");
  if (!button) { return; }
  var target = document.getElementById(button.getAttribute("data-target"));
  button.hidden = false;
  button.addEventListener("click", function () {
    var text = target ? target.textContent : "";
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy text"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); done(); } finally { document.body.removeChild(area); }
    }
  });
})();
