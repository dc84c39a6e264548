/* OpenSeadragon tile sources: the server's DZI and IIIF fronts, and the native tile API,
 * which alone serves other focal planes and optical paths (?z=, ?path=). */
(function (ns) {
  "use strict";

  function encoded(id) {
    return encodeURIComponent(id);
  }

  // One OpenSeadragon level per stored level (coarsest first), so every tile requested
  // is one stored frame: no level is ever composed for a plane the fronts cannot render.
  function nativeSource(slide, plane) {
    var base = slide.levels[0];
    var levels = slide.levels.slice().reverse();
    var query = "?format=jpeg&z=" + plane.z + "&path=" + plane.path;
    var prefix = "/slides/" + encoded(slide.id) + "/tiles/";
    var scales = levels.map(function (level) {
      return level.width / base.width;
    });
    return new OpenSeadragon.TileSource({
      width: base.width,
      height: base.height,
      tileWidth: base.tile_width,
      tileHeight: base.tile_height,
      minLevel: 0,
      maxLevel: levels.length - 1,
      getLevelScale: function (level) {
        return scales[level];
      },
      // The prototype rebuilds power-of-two scales here; ours are the stored ones.
      _memoizeLevelScale: function () {},
      getNumTiles: function (level) {
        var grid = levels[level] ? levels[level].grid : [0, 0];
        return new OpenSeadragon.Point(grid[0], grid[1]);
      },
      getTileWidth: function (level) {
        return levels[level].tile_width;
      },
      getTileHeight: function (level) {
        return levels[level].tile_height;
      },
      getTileUrl: function (level, col, row) {
        return ns.signed.url(prefix + levels[level].index + "/" + col + "/" + row + query);
      }
    });
  }

  function isDefaultPlane(plane) {
    return plane.z === 0 && plane.path === 0;
  }

  // The source the viewer opens: the asked front for the default plane, native otherwise.
  function tileSource(slide, kind, plane) {
    if (kind === "native" || !isDefaultPlane(plane)) {
      return nativeSource(slide, plane);
    }
    // IIIF tile URLs come from info.json's id, which cannot carry a signature: a signed
    // viewer uses Deep Zoom (OpenSeadragon passes the .dzi URL's query on to its tiles).
    if (kind === "iiif" && !ns.signed.active) {
      return "/iiif/3/" + encoded(slide.id) + "/info.json";
    }
    return ns.signed.url("/dzi/" + encoded(slide.id) + ".dzi");
  }

  function effectiveKind(kind, plane) {
    return isDefaultPlane(plane) ? kind : "native";
  }

  ns.sources = { tileSource: tileSource, effectiveKind: effectiveKind };
})((window.TileViewer = window.TileViewer || {}));
