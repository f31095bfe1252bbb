// Live updates without a reload: every element with data-live="URL" is replaced by the
// server-rendered fragment at URL every few seconds (paused while the tab is hidden).
// Ticked checkboxes survive the refresh, so a selection for an action is not lost.
(function () {
  "use strict";
  function refresh(el) {
    if (document.hidden) return;
    fetch(el.dataset.live, { credentials: "same-origin", headers: { "X-OmniQ-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var ticked = Array.prototype.map.call(
          el.querySelectorAll("input[type=checkbox]:checked"), function (c) { return c.value; });
        el.innerHTML = html;
        el.querySelectorAll("input[type=checkbox]").forEach(function (c) {
          if (ticked.indexOf(c.value) >= 0) c.checked = true;
        });
        el.dataset.refreshed = String(Date.now());
      })
      .catch(function () {});
  }
  document.querySelectorAll("[data-live]").forEach(function (el) {
    setInterval(function () { refresh(el); }, Number(el.dataset.every || 2000));
  });
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name=task_id]").forEach(function (c) { c.checked = all.checked; });
    });
  }
})();
