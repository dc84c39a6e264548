/* Slide viewer: OpenSeadragon over the server's DZI or IIIF front, a scale bar and the
 * slide's associated images. Exposes window.viewer and tile counters on <body> data
 * attributes (tilesLoaded, tilesFailed, fullyLoaded) for browser tests. */
(function () {
  "use strict";

  var body = document.body;
  var stats = { loaded: 0, failed: 0, failures: [] };
  window.tileStats = stats;

  function slideId() {
    if (body.dataset.slideId) {
      return body.dataset.slideId;
    }
    var match = /\/viewer\/([^/?#]+)\/?$/.exec(window.location.pathname);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function sourceKind() {
    var asked = new URLSearchParams(window.location.search).get("source");
    return asked === "iiif" ? "iiif" : "dzi";
  }

  function tileSourceUrl(id, kind) {
    var enc = encodeURIComponent(id);
    return kind === "iiif" ? "/iiif/3/" + enc + "/info.json" : "/dzi/" + enc + ".dzi";
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  function markToggle(kind) {
    var links = document.querySelectorAll("#source-toggle a");
    links.forEach(function (link) {
      var active = link.dataset.source === kind;
      link.classList.toggle("active", active);
      if (active) {
        link.setAttribute("aria-current", "true");
      }
    });
  }

  function describe(slide) {
    document.getElementById("slide-name").textContent = slide.name || slide.id;
    document.title = (slide.name || slide.id) + " \u2013 slide viewer";
    var base = slide.levels && slide.levels[0];
    var parts = [];
    if (base) {
      parts.push(base.width + " \u00d7 " + base.height + " px");
      parts.push(slide.levels.length + (slide.levels.length === 1 ? " level" : " levels"));
    }
    if (slide.mpp) {
      parts.push(slide.mpp[0].toPrecision(3) + " \u00b5m/px");
    }
    document.getElementById("slide-meta").textContent = parts.join(" \u00b7 ");
  }

  function showAssociated(id, names) {
    if (!names || names.length === 0) {
      return;
    }
    var panel = document.getElementById("associated");
    var list = panel.querySelector(".associated-list");
    names.forEach(function (name) {
      var figure = document.createElement("figure");
      var link = document.createElement("a");
      var img = document.createElement("img");
      var caption = document.createElement("figcaption");
      var url = "/slides/" + encodeURIComponent(id) + "/associated/" + encodeURIComponent(name);
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      img.src = url;
      img.alt = name + " image";
      img.loading = "lazy";
      caption.textContent = name;
      link.appendChild(img);
      figure.appendChild(link);
      figure.appendChild(caption);
      list.appendChild(figure);
    });
    panel.hidden = false;
  }

  function countTiles(viewer) {
    viewer.addHandler("tile-loaded", function () {
      stats.loaded += 1;
      body.dataset.tilesLoaded = String(stats.loaded);
    });
    viewer.addHandler("tile-load-failed", function (event) {
      stats.failed += 1;
      stats.failures.push(event.message || String(event.tileRequest && event.tileRequest.url));
      body.dataset.tilesFailed = String(stats.failed);
    });
    viewer.addHandler("fully-loaded-change", function (event) {
      body.dataset.fullyLoaded = event.fullyLoaded ? "true" : "false";
    });
    viewer.addHandler("open", function () {
      body.dataset.open = "true";
      setStatus("");
    });
    viewer.addHandler("open-failed", function (event) {
      body.dataset.openFailed = event.message || "open failed";
      setStatus("Could not open the slide: " + (event.message || "unknown error"));
    });
  }

  // Nice bar lengths: 1, 2, 5 x 10^n micrometres.
  function niceLength(maxMicrons) {
    var power = Math.pow(10, Math.floor(Math.log10(maxMicrons)));
    var steps = [5, 2, 1];
    for (var i = 0; i < steps.length; i += 1) {
      if (steps[i] * power <= maxMicrons) {
        return steps[i] * power;
      }
    }
    return power;
  }

  function formatLength(microns) {
    if (microns >= 1000) {
      return microns / 1000 + " mm";
    }
    if (microns >= 1) {
      return microns + " \u00b5m";
    }
    return microns * 1000 + " nm";
  }

  function installScaleBar(viewer, mppX) {
    var bar = document.getElementById("scalebar");
    var line = bar.querySelector(".scalebar-line");
    var label = bar.querySelector(".scalebar-label");
    var maxPixels = 160;

    function update() {
      var item = viewer.world.getItemAt(0);
      if (!item) {
        return;
      }
      // Screen pixels per level-0 pixel at the current zoom.
      var imageZoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
      var micronsPerScreenPixel = mppX / imageZoom;
      var microns = niceLength(micronsPerScreenPixel * maxPixels);
      line.style.width = Math.round(microns / micronsPerScreenPixel) + "px";
      label.textContent = formatLength(Number(microns.toPrecision(3)));
      bar.dataset.microns = String(microns);
      bar.hidden = false;
    }

    viewer.addHandler("open", update);
    viewer.addHandler("animation", update);
    viewer.addHandler("resize", update);
    viewer.addHandler("zoom", update);
  }

  function open(slide, kind) {
    var viewer = OpenSeadragon({
      id: "viewer",
      prefixUrl: "/static/openseadragon/images/",
      tileSources: tileSourceUrl(slide.id, kind),
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: true,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      timeout: 60000
    });
    window.viewer = viewer;
    countTiles(viewer);
    if (slide.mpp && slide.mpp[0] > 0) {
      installScaleBar(viewer, slide.mpp[0]);
    }
    return viewer;
  }

  function start() {
    var id = slideId();
    var kind = sourceKind();
    body.dataset.source = kind;
    markToggle(kind);
    if (!id) {
      setStatus("No slide id in the address.");
      body.dataset.error = "no slide id";
      return;
    }
    body.dataset.slideId = id;
    setStatus("Loading slide\u2026");
    fetch("/slides/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (slide) {
        describe(slide);
        showAssociated(slide.id, slide.associated);
        open(slide, kind);
      })
      .catch(function (error) {
        body.dataset.error = String(error.message || error);
        setStatus("Could not load slide " + id + ": " + (error.message || error));
      });
  }

  start();
})();
