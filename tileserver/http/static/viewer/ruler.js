/* Measuring ruler: while on, a drag over the slide draws a line and shows its length in
 * micrometres (or pixels when the slide has no pixel spacing). The line is kept in image
 * coordinates, so it follows the slide as the view pans and zooms. */
(function (ns) {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";

  function svgChild(parent, name) {
    var node = document.createElementNS(SVG, name);
    parent.appendChild(node);
    return node;
  }

  function lengthText(start, end, mpp) {
    var pixels = Math.hypot(end.x - start.x, end.y - start.y);
    if (mpp) {
      return { value: pixels * mpp, text: ns.units.formatLength(pixels * mpp) };
    }
    return { value: pixels, text: Math.round(pixels) + " px" };
  }

  function Ruler(viewer, mpp, overlay, output, button) {
    this.viewer = viewer;
    this.mpp = mpp;
    this.overlay = overlay;
    this.output = output;
    this.button = button;
    this.line = svgChild(overlay, "line");
    this.label = svgChild(overlay, "text");
    this.start = null;
    this.end = null;
    this.dragging = false;
    this.bind();
  }

  Ruler.prototype.bind = function () {
    var self = this;
    this.overlay.addEventListener("pointerdown", function (event) {
      self.dragging = true;
      self.overlay.setPointerCapture(event.pointerId);
      self.start = self.end = ns.cursor.imagePoint(self.viewer, event);
      self.draw();
    });
    this.overlay.addEventListener("pointermove", function (event) {
      if (self.dragging) {
        self.end = ns.cursor.imagePoint(self.viewer, event);
        self.draw();
      }
    });
    this.overlay.addEventListener("pointerup", function () {
      self.dragging = false;
    });
    this.viewer.addHandler("update-viewport", function () {
      self.draw();
    });
    this.button.addEventListener("click", function () {
      self.toggle();
    });
  };

  Ruler.prototype.isOn = function () {
    return this.button.getAttribute("aria-pressed") === "true";
  };

  Ruler.prototype.toggle = function (on) {
    var active = on === undefined ? !this.isOn() : on;
    this.button.setAttribute("aria-pressed", active ? "true" : "false");
    this.overlay.classList.toggle("measuring", active);
    if (!active) {
      this.clear();
    }
  };

  Ruler.prototype.clear = function () {
    this.start = this.end = null;
    this.dragging = false;
    this.output.textContent = "";
    delete this.output.dataset.length;
    this.draw();
  };

  Ruler.prototype.draw = function () {
    var item = this.viewer.world.getItemAt(0);
    var shown = Boolean(item && this.start && this.end);
    this.line.style.display = this.label.style.display = shown ? "" : "none";
    if (!shown) {
      return;
    }
    var a = item.imageToViewerElementCoordinates(this.start);
    var b = item.imageToViewerElementCoordinates(this.end);
    [["x1", a.x], ["y1", a.y], ["x2", b.x], ["y2", b.y]].forEach(function (pair) {
      this.line.setAttribute(pair[0], String(pair[1]));
    }, this);
    var length = lengthText(this.start, this.end, this.mpp);
    this.label.setAttribute("x", String((a.x + b.x) / 2 + 8));
    this.label.setAttribute("y", String((a.y + b.y) / 2 - 8));
    this.label.textContent = length.text;
    this.output.textContent = "Measured " + length.text;
    this.output.dataset.length = String(length.value);
  };

  ns.ruler = {
    install: function (viewer, mpp, overlay, output, button) {
      return new Ruler(viewer, mpp, overlay, output, button);
    }
  };
})((window.TileViewer = window.TileViewer || {}));
