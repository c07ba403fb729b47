// The sign-in form's "Signing in…" state: once submitted, its button says so
// and is disabled, so a second press cannot send the password twice. Without
// this script the form posts all the same.
(function () {
  "use strict";

  var form = document.getElementById("sign-in-form");
  if (!form) return;
  form.addEventListener("submit", function () {
    var button = form.querySelector("button[type=submit]");
    if (!button || button.disabled) return;
    // On the next tick, once the browser has started the submission.
    window.setTimeout(function () {
      button.disabled = true;
      button.setAttribute("aria-disabled", "true");
      button.textContent = button.getAttribute("data-busy-text") || button.textContent;
    }, 0);
  });
  // Back from the next page (bfcache): the form is usable again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    var button = form.querySelector("button[type=submit]");
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-disabled");
      button.textContent = "Sign in";
    }
  });
})();
