// The dashboard's script: expiry times in local time with a live countdown, a
// refresh from the browser shortly before the access token runs out (the
// article's client-side /auth/refresh, here same-origin /accounts/refresh/),
// and the demo buttons. No token is ever visible here: they are HttpOnly
// cookies, or (AUTH_TOKEN_STORAGE=session) they never leave the server.
(function () {
  "use strict";

  var demo = document.getElementById("demo");
  var output = document.getElementById("demo-output");
  var csrf = demo && demo.querySelector("input[name=csrfmiddlewaretoken]");
  var REFRESH_BEFORE = 5; // seconds before expiry the page refreshes by itself
  var refreshing = null;

  function format(seconds) {
    if (seconds <= 0) return "(expired)";
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60, parts = [];
    if (d) parts.push(d + "d");
    if (d || h) parts.push(h + "h");
    if (d || h || m) parts.push(m + "m");
    parts.push(s + "s");
    return "(in " + parts.join(" ") + ")";
  }

  // The pages' one way of writing a moment (accounts/templatetags/moments.py),
  // here in the browser's own time zone: "6 Dec 2025, 14:05 GMT+1".
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function moment(at) {
    var zone = "";
    try {
      new Intl.DateTimeFormat("en-GB", { timeZoneName: "short" }).formatToParts(at).forEach(
        function (part) {
          if (part.type === "timeZoneName") zone = " " + part.value;
        }
      );
    } catch (e) {
      zone = "";
    }
    return at.getDate() + " " + MONTHS[at.getMonth()] + " " + at.getFullYear() + ", " +
      pad(at.getHours()) + ":" + pad(at.getMinutes()) + zone;
  }

  function secondsLeft(id) {
    var el = document.getElementById(id);
    if (!el || !el.getAttribute("datetime")) return null;
    return Math.round((new Date(el.getAttribute("datetime")) - Date.now()) / 1000);
  }

  function tick() {
    document.querySelectorAll("time.expiry").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      el.textContent = moment(at);
      var counter = document.querySelector('.countdown[data-for="' + el.id + '"]');
      if (counter) counter.textContent = format(Math.round((at - Date.now()) / 1000));
    });
    var left = secondsLeft("access-expiry");
    if (left !== null && left <= REFRESH_BEFORE && !refreshing) refreshFromBrowser(false);
  }

  function signIn() {
    var next = encodeURIComponent(window.location.pathname + window.location.search);
    window.location.assign(demo.dataset.loginUrl + "?next=" + next);
  }

  function show(label, value) {
    if (output) output.textContent = label + "\n" + JSON.stringify(value, null, 2);
  }

  function refreshFromBrowser(report) {
    var mine = (refreshing = fetch(demo.dataset.refreshUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf ? csrf.value : "", Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 401) return signIn();
        return response.json().then(function (body) {
          if (body.ok && body.access_expires_at) {
            var el = document.getElementById("access-expiry");
            if (el) el.setAttribute("datetime", body.access_expires_at);
          }
          if (report) show("POST " + demo.dataset.refreshUrl + " → " + response.status, body);
        });
      })
      .catch(function (error) {
        if (report) show("Refresh failed", String(error));
      })
      .finally(function () {
        // Wait a little before the countdown tries again; a newer refresh
        // (a button press meanwhile) keeps its own guard.
        window.setTimeout(function () {
          if (refreshing === mine) refreshing = null;
        }, 2000);
      }));
    return mine;
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) return signIn();
        return response.json().then(function (body) {
          show("GET " + url + " → " + response.status, body);
        });
      })
      .catch(function (error) { show("GET " + url + " failed", String(error)); });
  }

  if (demo) {
    document.getElementById("refresh-browser").addEventListener("click", function () {
      refreshFromBrowser(true);
    });
    document.getElementById("profile-server").addEventListener("click", function () {
      getJSON(demo.dataset.profileUrl);
    });
    document.getElementById("profile-browser").addEventListener("click", function () {
      getJSON(demo.dataset.apiUrl);
    });
  }
  tick();
  window.setInterval(tick, 1000);
})();
