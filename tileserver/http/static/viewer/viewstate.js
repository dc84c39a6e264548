/* Shareable view state in the address hash: #x=..&y=..&zoom=..&z=..&path=..
 * x and y are the level-0 pixel at the centre of the view, zoom is screen pixels per
 * level-0 pixel, so a link shows the same place at the same scale on any screen size. */
(function (ns) {
  "use strict";

  function number(params, name) {
    var raw = params.get(name);
    if (raw === null || raw === "") {
      return null;
    }
    var value = Number(raw);
    return isFinite(value) ? value : null;
  }

  function index(params, name) {
    var value = number(params, name);
    return value !== null && value >= 0 ? Math.floor(value) : 0;
  }

  // Parses "#x=1&y=2&zoom=0.5&z=1&path=0"; missing or bad parts are null (or plane 0).
  function parse(hash) {
    var params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
    var zoom = number(params, "zoom");
    return {
      x: number(params, "x"),
      y: number(params, "y"),
      zoom: zoom !== null && zoom > 0 ? zoom : null,
      plane: { z: index(params, "z"), path: index(params, "path") }
    };
  }

  function format(state) {
    var parts = [];
    if (state.x !== null && state.y !== null) {
      parts.push("x=" + Math.round(state.x), "y=" + Math.round(state.y));
    }
    if (state.zoom) {
      parts.push("zoom=" + Number(state.zoom.toPrecision(4)));
    }
    if (state.plane.z) {
      parts.push("z=" + state.plane.z);
    }
    if (state.plane.path) {
      parts.push("path=" + state.plane.path);
    }
    return parts.length ? "#" + parts.join("&") : "";
  }

  function current(viewer, plane) {
    var item = viewer.world.getItemAt(0);
    if (!item) {
      return null;
    }
    // Where the view is heading, so a plane switch mid-animation keeps the place asked for.
    var vp = viewer.viewport;
    var centre = item.viewportToImageCoordinates(vp.getCenter(false));
    return {
      x: centre.x,
      y: centre.y,
      zoom: item.viewportToImageZoom(vp.getZoom(false)),
      plane: plane
    };
  }

  function apply(viewer, state, immediately) {
    var item = viewer.world.getItemAt(0);
    if (!item) {
      return;
    }
    var vp = viewer.viewport;
    if (state.zoom) {
      vp.zoomTo(item.imageToViewportZoom(state.zoom), null, immediately);
    }
    if (state.x !== null && state.y !== null) {
      vp.panTo(item.imageToViewportCoordinates(state.x, state.y), immediately);
    }
  }

  function shareUrl(state) {
    var url = new URL(window.location.href);
    url.hash = format(state);
    return url.toString();
  }

  ns.viewstate = {
    parse: parse,
    format: format,
    current: current,
    apply: apply,
    shareUrl: shareUrl
  };
})((window.TileViewer = window.TileViewer || {}));
