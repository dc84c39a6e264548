/* Panel controls: focal plane and channel selectors, magnification presets, the link to
 * the current view. Each calls back into main.js; none knows about tile sources. */
(function (ns) {
  "use strict";

  function fillSelect(select, labels, chosen) {
    labels.forEach(function (text, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = text;
      option.selected = i === chosen;
      select.appendChild(option);
    });
  }

  function planeLabels(slide) {
    return slide.focal_planes.map(function (z, i) {
      return i + ": " + Number(z.toPrecision(4)) + " \u00b5m";
    });
  }

  function pathLabels(slide) {
    return slide.optical_paths.map(function (id, i) {
      return i + ": " + id;
    });
  }

  // Selectors appear only for what the slide has more than one of.
  function installPlanes(slide, plane, onChange) {
    var focal = document.getElementById("focal-plane");
    var path = document.getElementById("optical-path");
    var many = [slide.focal_planes.length > 1, slide.optical_paths.length > 1];
    document.getElementById("focal-row").hidden = !many[0];
    document.getElementById("path-row").hidden = !many[1];
    document.getElementById("plane-controls").hidden = !(many[0] || many[1]);
    fillSelect(focal, planeLabels(slide), plane.z);
    fillSelect(path, pathLabels(slide), plane.path);
    function changed() {
      onChange({ z: Number(focal.value), path: Number(path.value) });
    }
    focal.addEventListener("change", changed);
    path.addEventListener("change", changed);
  }

  function showPlane(plane) {
    document.getElementById("focal-plane").value = String(plane.z);
    document.getElementById("optical-path").value = String(plane.path);
  }

  function installPresets(viewer, mpp, onPick) {
    var box = document.getElementById("presets");
    var powers = ns.units.presetsFor(mpp);
    if (powers.length === 0) {
      box.textContent = mpp ? "Scanned below 2.5\u00d7." : "No pixel spacing.";
      return [];
    }
    var buttons = powers.map(function (power) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = ns.units.formatMagnification(power);
      button.dataset.magnification = String(power);
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", function () {
        onPick(power);
      });
      box.appendChild(button);
      return button;
    });
    viewer.addHandler("animation-finish", function () {
      var item = viewer.world.getItemAt(0);
      var zoom = item ? item.viewportToImageZoom(viewer.viewport.getZoom(true)) : 0;
      var now = ns.units.magnificationAt(zoom, mpp);
      buttons.forEach(function (button) {
        var power = Number(button.dataset.magnification);
        button.setAttribute("aria-pressed", Math.abs(now / power - 1) < 0.01 ? "true" : "false");
      });
    });
    return powers;
  }

  function showLink(url) {
    document.getElementById("share-link").value = url;
  }

  function installCopy() {
    var button = document.getElementById("share-copy");
    var input = document.getElementById("share-link");
    button.addEventListener("click", function () {
      input.select();
      var done = function () {
        button.textContent = "Copied";
        window.setTimeout(function () {
          button.textContent = "Copy";
        }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {});
      } else if (document.execCommand("copy")) {
        done();
      }
    });
  }

  ns.controls = {
    installPlanes: installPlanes,
    showPlane: showPlane,
    installPresets: installPresets,
    showLink: showLink,
    installCopy: installCopy
  };
})((window.TileViewer = window.TileViewer || {}));
