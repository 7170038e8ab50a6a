// The job page's live refresh. A running job's summary that names its event stream
// (`data-events`) is refreshed by htmx on each of the job's events instead of every few seconds;
// its own `every 30s` trigger stays as a fallback. A file, not inline: the CSP refuses inline
// scripts. Without JavaScript the page still shows everything; it just does not move.
(function () {
  "use strict";

  var EVENTS = ["person.completed", "person.updated", "job.completed", "job.updated"];

  // htmx swaps the whole section (outerHTML): look it up each time, never keep the element.
  function summary() {
    return document.getElementById("summary");
  }

  function start() {
    var first = summary();
    var url = first && first.getAttribute("data-events");
    if (!url || !window.htmx || !window.EventSource) {
      return;
    }
    var source = new EventSource(url);
    var inFlight = false;
    var again = false;

    // htmx ignores a trigger while the summary's refresh is in flight: remember it and ask again
    // once that answer is in, so the last counts never wait for the fallback.
    function refresh() {
      var el = summary();
      if (!el) {
        return;
      }
      if (inFlight) {
        again = true;
        return;
      }
      htmx.trigger(el, "job-event");
    }

    document.body.addEventListener("htmx:beforeRequest", function (e) {
      if (e.detail.elt && e.detail.elt.id === "summary") {
        inFlight = true;
      }
    });
    document.body.addEventListener("htmx:afterRequest", function (e) {
      if (!e.detail.elt || e.detail.elt.id !== "summary") {
        return;
      }
      inFlight = false;
      var el = summary();
      // A finished job's summary no longer names the stream: nothing more will come.
      if (!el || !el.getAttribute("data-events")) {
        source.close();
        return;
      }
      if (again) {
        again = false;
        // After the swap has settled, so the trigger reaches the new section.
        setTimeout(refresh, 50);
      }
    });

    EVENTS.forEach(function (name) {
      source.addEventListener(name, function () {
        refresh();
        // The stream ends after job.completed; left open, EventSource would reconnect.
        if (name === "job.completed") {
          source.close();
        }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
