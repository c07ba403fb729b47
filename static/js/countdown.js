// Show each <time class="expiry"> in the browser's local time, with a live countdown.
(function () {
  "use strict";

  function format(seconds) {
    if (seconds <= 0) return "(expired)";
    var d = Math.floor(seconds / 86400);
    var h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var parts = [];
    if (d) parts.push(d + "d");
    if (d || h) parts.push(h + "h");
    if (d || h || m) parts.push(m + "m");
    parts.push(s + "s");
    return "(in " + parts.join(" ") + ")";
  }

  function tick() {
    document.querySelectorAll("time.expiry").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      el.textContent = at.toLocaleString();
      var counter = document.querySelector('.countdown[data-for="' + el.id + '"]');
      if (counter) counter.textContent = format(Math.round((at - Date.now()) / 1000));
    });
  }

  tick();
  window.setInterval(tick, 1000);
})();
