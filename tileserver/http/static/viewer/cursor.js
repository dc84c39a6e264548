/* Readout of the pointer position (level-0 pixels and micrometres) and the current
 * magnification, updated as the pointer moves and the view zooms. */
(function (ns) {
  "use strict";

  function imagePoint(viewer, event) {
    var item = viewer.world.getItemAt(0);
    if (!item) {
      return null;
    }
    var rect = viewer.element.getBoundingClientRect();
    var at = new OpenSeadragon.Point(event.clientX - rect.left, event.clientY - rect.top);
    return item.viewerElementToImageCoordinates(at);
  }

  function describe(point, mpp) {
    if (mpp) {
      return (
        "x " + ns.units.formatLength(point.x * mpp, 4) +
        ", y " + ns.units.formatLength(point.y * mpp, 4)
      );
    }
    return "x " + Math.round(point.x) + " px, y " + Math.round(point.y) + " px";
  }

  function installPosition(viewer, mpp, output) {
    viewer.element.addEventListener("pointermove", function (event) {
      var point = imagePoint(viewer, event);
      if (!point) {
        return;
      }
      output.textContent = describe(point, mpp);
      output.dataset.x = String(point.x);
      output.dataset.y = String(point.y);
    });
    viewer.element.addEventListener("pointerleave", function () {
      output.textContent = "";
    });
  }

  function installMagnification(viewer, mpp, output) {
    function update() {
      var item = viewer.world.getItemAt(0);
      if (!item || !mpp) {
        return;
      }
      var zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
      var power = ns.units.magnificationAt(zoom, mpp);
      output.textContent = ns.units.formatMagnification(power);
      output.dataset.magnification = String(power);
    }
    ["open", "animation", "resize", "zoom"].forEach(function (name) {
      viewer.addHandler(name, update);
    });
  }

  ns.cursor = {
    imagePoint: imagePoint,
    installPosition: installPosition,
    installMagnification: installMagnification
  };
})((window.TileViewer = window.TileViewer || {}));
