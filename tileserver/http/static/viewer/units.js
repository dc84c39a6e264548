/* Lengths and magnifications: pure functions, no DOM. */
(function (ns) {
  "use strict";

  // Objective power from pixel spacing: a 40x scan is about 0.25 um/px, so power = 10 / mpp.
  var MICRONS_AT_1X = 10;
  var PRESETS = [2.5, 5, 10, 20, 40];

  // Nice bar lengths: 1, 2, 5 x 10^n micrometres, the largest not above maxMicrons.
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

  function trim(value, digits) {
    return String(Number(value.toPrecision(digits)));
  }

  // "12.3 um", "1.25 mm", "450 nm": three significant digits, unit chosen by size.
  function formatLength(microns, digits) {
    var d = digits || 3;
    if (Math.abs(microns) >= 1000) {
      return trim(microns / 1000, d) + " mm";
    }
    if (Math.abs(microns) >= 1 || microns === 0) {
      return trim(microns, d) + " \u00b5m";
    }
    return trim(microns * 1000, d) + " nm";
  }

  function magnificationAt(imageZoom, mpp) {
    return (MICRONS_AT_1X * imageZoom) / mpp;
  }

  function imageZoomFor(magnification, mpp) {
    return (magnification * mpp) / MICRONS_AT_1X;
  }

  // Presets the slide can show without enlarging its finest pixels (2% slack for
  // scanners that write 0.2527 um/px for a 40x scan).
  function presetsFor(mpp) {
    if (!(mpp > 0)) {
      return [];
    }
    var native = MICRONS_AT_1X / mpp;
    return PRESETS.filter(function (power) {
      return power <= native * 1.02;
    });
  }

  function formatMagnification(power) {
    return trim(power, power < 10 ? 2 : 3) + "\u00d7";
  }

  ns.units = {
    PRESETS: PRESETS,
    niceLength: niceLength,
    formatLength: formatLength,
    magnificationAt: magnificationAt,
    imageZoomFor: imageZoomFor,
    presetsFor: presetsFor,
    formatMagnification: formatMagnification
  };
})((window.TileViewer = window.TileViewer || {}));
