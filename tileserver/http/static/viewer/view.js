/* The view: OpenSeadragon over the server's DZI, IIIF or native tiles, wired to the
 * panel, ruler, readouts, keys and the shareable address. Exposes window.viewer, and tile
 * counters and state on <body> data attributes, for browser tests. */
(function (ns) {
  "use strict";

  var body = document.body;
  var stats = { loaded: 0, failed: 0, failures: [] };
  var opens = 0;
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
    return asked === "iiif" || asked === "native" ? asked : "dzi";
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  function markToggle(kind) {
    document.querySelectorAll("#source-toggle a").forEach(function (link) {
      var active = link.dataset.source === kind;
      link.classList.toggle("active", active);
      if (active) {
        link.setAttribute("aria-current", "true");
      } else {
        link.removeAttribute("aria-current");
      }
    });
  }

  function describe(slide) {
    var name = slide.name || slide.id;
    document.getElementById("slide-name").textContent = name;
    document.title = name + " \u2013 slide viewer";
    var parts = [slide.width + " \u00d7 " + slide.height + " px"];
    parts.push(slide.levels.length + (slide.levels.length === 1 ? " level" : " levels"));
    if (slide.mpp) {
      parts.push(slide.mpp[0].toPrecision(3) + " \u00b5m/px");
    }
    document.getElementById("slide-meta").textContent = parts.join(" \u00b7 ");
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
    viewer.addHandler("open-failed", function (event) {
      body.dataset.openFailed = event.message || "open failed";
      setStatus("Could not open the slide: " + (event.message || "unknown error"));
    });
  }

  function createViewer(source) {
    return OpenSeadragon({
      id: "viewer",
      prefixUrl: "/static/openseadragon/images/",
      tileSources: source,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: true,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      timeout: 60000
    });
  }

  function View(slide, kind, state) {
    this.slide = slide;
    this.kind = kind;
    this.mpp = slide.mpp && slide.mpp[0] > 0 ? slide.mpp[0] : null;
    this.plane = this.clampPlane(state.plane);
    this.pending = state;
    this.viewer = createViewer(this.source());
    window.viewer = this.viewer;
    countTiles(this.viewer);
    this.viewer.addHandler("open", this.opened.bind(this));
    this.viewer.addHandler("animation-finish", this.remember.bind(this));
  }

  View.prototype.clampPlane = function (plane) {
    var planes = Math.max(1, this.slide.focal_planes.length);
    var paths = Math.max(1, this.slide.optical_paths.length);
    return { z: Math.min(plane.z, planes - 1), path: Math.min(plane.path, paths - 1) };
  };

  View.prototype.source = function () {
    var effective = ns.sources.effectiveKind(this.kind, this.plane);
    body.dataset.source = effective;
    body.dataset.plane = this.plane.z + "," + this.plane.path;
    markToggle(effective);
    return ns.sources.tileSource(this.slide, this.kind, this.plane);
  };

  // Each open (first load, or another plane) restores the view it was asked to keep.
  View.prototype.opened = function () {
    if (this.pending) {
      ns.viewstate.apply(this.viewer, this.pending, true);
      this.pending = null;
    }
    opens += 1;
    body.dataset.opens = String(opens);
    body.dataset.open = "true";
    setStatus("");
    this.remember();
  };

  View.prototype.state = function () {
    return ns.viewstate.current(this.viewer, this.plane);
  };

  // The address always holds the current view, so copying it shares the view.
  View.prototype.remember = function () {
    var state = this.state();
    if (!state) {
      return;
    }
    var hash = ns.viewstate.format(state);
    window.history.replaceState(null, "", window.location.pathname + window.location.search + hash);
    ns.controls.showLink(ns.viewstate.shareUrl(state));
    // Switching between DZI and IIIF keeps the place too.
    document.querySelectorAll("#source-toggle a").forEach(function (link) {
      link.setAttribute("href", "?source=" + link.dataset.source + hash);
    });
  };

  View.prototype.setPlane = function (plane) {
    var next = this.clampPlane(plane);
    if (next.z === this.plane.z && next.path === this.plane.path) {
      return;
    }
    // Mid-switch there is no image to read the view from: keep the one already pending.
    this.pending = this.state() || this.pending;
    this.plane = next;
    ns.controls.showPlane(next);
    body.dataset.open = "false";
    this.viewer.open(this.source());
  };

  View.prototype.stepPlane = function (axis, step) {
    var count = axis === "z" ? this.slide.focal_planes.length : this.slide.optical_paths.length;
    var next = { z: this.plane.z, path: this.plane.path };
    next[axis] = (next[axis] + step + count) % Math.max(1, count);
    this.setPlane(next);
  };

  View.prototype.zoomToMagnification = function (power) {
    var item = this.viewer.world.getItemAt(0);
    if (item && this.mpp) {
      this.viewer.viewport.zoomTo(item.imageToViewportZoom(ns.units.imageZoomFor(power, this.mpp)));
    }
  };

  View.prototype.followHash = function () {
    var state = ns.viewstate.parse(window.location.hash);
    if (state.plane.z !== this.plane.z || state.plane.path !== this.plane.path) {
      this.setPlane(state.plane);
      this.pending = state;
    } else {
      ns.viewstate.apply(this.viewer, state, false);
    }
  };

  ns.View = View;
  ns.main = { slideId: slideId, sourceKind: sourceKind, describe: describe, setStatus: setStatus };
})((window.TileViewer = window.TileViewer || {}));
