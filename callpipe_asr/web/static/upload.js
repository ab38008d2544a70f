// Progressive enhancement of the upload form: shows upload progress, then follows the
// server's 303 to the transcript page. Without JavaScript the plain form post does the same.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) { return; }
  var bar = document.getElementById("progress-bar");
  var box = document.getElementById("progress");
  var label = document.getElementById("progress-text");
  var button = document.getElementById("submit");
  var problem = document.getElementById("script-error");

  function fail(message) {
    box.hidden = true; button.disabled = false;
    problem.textContent = message; problem.hidden = false;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    problem.hidden = true; box.hidden = false; button.disabled = true;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "fetch");
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) { return; }
      var pct = Math.round((e.loaded / e.total) * 100);
      bar.style.width = pct + "%";
      label.textContent = pct < 100 ? "Uploading… " + pct + "%" : "Checking the audio…";
    };
    xhr.onload = function () {
      if (xhr.status >= 200 && xhr.status < 400 && xhr.responseURL && xhr.responseURL.indexOf("/transcripts/") !== -1) {
        window.location.assign(xhr.responseURL);
        return;
      }
      var message = "The upload failed (HTTP " + xhr.status + ").";
      try { message = JSON.parse(xhr.responseText).error.message; } catch (ignored) { /* keep the generic text */ }
      fail(message);
    };
    xhr.onerror = function () { fail("The server could not be reached."); };
    xhr.send(new FormData(form));
  });
})();
