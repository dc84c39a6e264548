/* Scale bar: a 1-2-5 length in micrometres, redrawn as the view zooms. */
(function (ns) {
  "use strict";

  var MAX_PIXELS = 160;

  function install(viewer, mpp) {
    var bar = document.getElementById("scalebar");
    var line = bar.querySelector(".scalebar-line");
    var label = bar.querySelector(".scalebar-label");

    function update() {
      var item = viewer.world.getItemAt(0);
      if (!item) {
        return;
      }
      // Screen pixels per level-0 pixel at the current zoom.
      var imageZoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
      var micronsPerScreenPixel = mpp / imageZoom;
      var microns = ns.units.niceLength(micronsPerScreenPixel * MAX_PIXELS);
      line.style.width = Math.round(microns / micronsPerScreenPixel) + "px";
      label.textContent = ns.units.formatLength(microns);
      bar.dataset.microns = String(microns);
      bar.hidden = false;
    }

    ["open", "animation", "resize", "zoom"].forEach(function (name) {
      viewer.addHandler(name, update);
    });
  }

  ns.scalebar = { install: install };
})((window.TileViewer = window.TileViewer || {}));
