// taskd dashboard: small progressive enhancements. Everything works without this file.
(function () {
  "use strict";

  // Live pages pause while the tab is hidden: closing the EventSource frees the server's
  // stream; a fresh copy of the element opens a new one when the tab is shown again.
  function pause() {
    document.querySelectorAll("[sse-connect]").forEach(function (el) {
      htmx.trigger(el, "htmx:beforeCleanupElement");
      el.setAttribute("data-paused", "");
    });
  }

  function resume() {
    document.querySelectorAll("[sse-connect][data-paused]").forEach(function (el) {
      var fresh = el.cloneNode(true);
      fresh.removeAttribute("data-paused");
      el.replaceWith(fresh);
      htmx.process(fresh);
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      pause();
    } else {
      resume();
    }
  });

  // "Select all" for bulk actions.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-select-all]")) {
      return;
    }
    var table = box.closest("table");
    table.querySelectorAll("input[type=checkbox][name=id]").forEach(function (each) {
      each.checked = box.checked;
    });
  });
})();
