// fleetmig serve: a page whose body names an event stream (data-live)
// fetches its #live part again whenever the stream says the rollout
// changed in the state store. No reload: the part is replaced in place.
(function () {
  var src = document.body.getAttribute("data-live");
  if (!src || !window.EventSource) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var live = document.getElementById("live");
        if (html !== null && live) live.innerHTML = html;
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  // a stream the browser gave up on (an answer but 200, the server
  // restarted) is opened again, and the part fetched for what was missed
  function open() {
    var es = new EventSource(src);
    es.addEventListener("changed", refresh);
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) setTimeout(function () { open(); refresh(); }, 2000);
    };
  }
  open();
})();
