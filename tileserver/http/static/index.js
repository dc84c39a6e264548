/* Landing page: GET /slides, one card per slide, and a search over name, path, study,
 * patient and date. The listing has names and paths; study, patient and date come from each
 * slide's GET /slides/{id} attributes (or the entry's own, when the listing carries them),
 * fetched a few at a time after the cards are shown. */
(function (ns) {
  "use strict";

  var DETAIL_REQUESTS = 4;
  var items = [];

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  function cardMeta(entry, attrs) {
    var parts = [];
    if (entry.width) {
      parts.push(entry.width + " \u00d7 " + entry.height);
    }
    if (attrs) {
      var study = attrs.StudyDescription || attrs.StudyID || attrs.AccessionNumber;
      [study, attrs.PatientName && attrs.PatientName.replace(/\^/g, " "),
        ns.search.isoDate(attrs.StudyDate)].forEach(function (part) {
        if (part) {
          parts.push(part);
        }
      });
    }
    if (entry.path) {
      parts.push(entry.path);
    }
    return parts.join(" \u00b7 ");
  }

  function card(entry) {
    var item = document.createElement("li");
    item.className = "slide";
    item.dataset.slideId = entry.id;
    var link = document.createElement("a");
    link.href = "/viewer/" + encodeURIComponent(entry.id);
    var img = document.createElement("img");
    img.src = "/slides/" + encodeURIComponent(entry.id) + "/thumbnail?max=256";
    img.alt = "";
    img.loading = "lazy";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name || entry.id;
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = cardMeta(entry, null);
    link.appendChild(img);
    link.appendChild(name);
    link.appendChild(meta);
    item.appendChild(link);
    return { entry: entry, node: item, meta: meta, text: ns.search.haystack(entry), date: "" };
  }

  function learn(item, attrs) {
    item.text = ns.search.haystack(item.entry, attrs);
    item.date = ns.search.isoDate(attrs.StudyDate);
    item.meta.textContent = cardMeta(item.entry, attrs);
    item.node.dataset.details = "true";
  }

  function filter() {
    var query = document.getElementById("query").value;
    var from = document.getElementById("date-from").value;
    var to = document.getElementById("date-to").value;
    var shown = 0;
    items.forEach(function (item) {
      var visible = ns.search.matches(item, query, from, to);
      item.node.hidden = !visible;
      shown += visible ? 1 : 0;
    });
    var filtering = Boolean(query || from || to);
    document.getElementById("search-count").textContent =
      filtering ? shown + " of " + items.length + " shown" : "";
    document.body.dataset.shown = String(shown);
  }

  function fetchJson(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (response) {
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.json();
    });
  }

  // A small pool of detail requests, so a long list does not flood the server.
  function loadDetails(queue) {
    var done = 0;
    function next() {
      var item = queue.shift();
      if (!item) {
        return Promise.resolve();
      }
      return fetchJson("/slides/" + encodeURIComponent(item.entry.id))
        .then(function (slide) {
          learn(item, slide.attributes || {});
        }, function () {})
        .then(function () {
          done += 1;
          setStatus(queue.length ? "Reading study details\u2026 " + done : "");
          filter();
          return next();
        });
    }
    var workers = [];
    for (var i = 0; i < DETAIL_REQUESTS; i += 1) {
      workers.push(next());
    }
    return Promise.all(workers).then(function () {
      document.body.dataset.detailsLoaded = "true";
    });
  }

  function render(entries) {
    var list = document.getElementById("slides");
    items = entries.map(card);
    items.forEach(function (item) {
      list.appendChild(item.node);
    });
    document.getElementById("slide-total").textContent =
      entries.length + (entries.length === 1 ? " slide" : " slides");
    document.body.dataset.slideCount = String(entries.length);
    setStatus(entries.length === 0 ? "No slides found." : "");
    var missing = items.filter(function (item) {
      if (item.entry.attributes) {
        learn(item, item.entry.attributes);
        return false;
      }
      return true;
    });
    filter();
    return loadDetails(missing);
  }

  // Filtering is live; Enter in the search field must not reload the page.
  document.getElementById("search").addEventListener("submit", function (event) {
    event.preventDefault();
  });
  ["query", "date-from", "date-to"].forEach(function (id) {
    document.getElementById(id).addEventListener("input", filter);
  });
  setStatus("Loading slides\u2026");
  fetchJson("/slides")
    .then(function (data) {
      return render(data.slides || []);
    })
    .catch(function (error) {
      document.body.dataset.error = String(error.message || error);
      setStatus("Could not list slides: " + (error.message || error));
    });
})((window.TileViewer = window.TileViewer || {}));
