/* The slide's own background (glass) colour, painted behind the image so the area around
 * the slide and not-yet-loaded tiles match it instead of black. The server's value
 * (slide.background) wins; otherwise it is estimated as the median colour of the border of a
 * small thumbnail, where a slide scan is nearly always empty glass. */
(function (ns) {
  "use strict";

  var THUMB = 64;

  function median(values) {
    values.sort(function (a, b) {
      return a - b;
    });
    return values[Math.floor(values.length / 2)];
  }

  function borderMedian(data, width, height) {
    var channels = [[], [], []];
    for (var y = 0; y < height; y += 1) {
      for (var x = 0; x < width; x += 1) {
        if (x > 1 && y > 1 && x < width - 2 && y < height - 2) {
          continue;
        }
        var at = (y * width + x) * 4;
        for (var c = 0; c < 3; c += 1) {
          channels[c].push(data[at + c]);
        }
      }
    }
    return channels.map(median);
  }

  function fromThumbnail(id) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () {
        var canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        var context = canvas.getContext("2d", { willReadFrequently: true });
        context.drawImage(img, 0, 0);
        var pixels = context.getImageData(0, 0, canvas.width, canvas.height);
        resolve(borderMedian(pixels.data, canvas.width, canvas.height));
      };
      img.onerror = function () {
        reject(new Error("thumbnail failed"));
      };
      img.src = ns.signed.url(
        "/slides/" + encodeURIComponent(id) + "/thumbnail?max=" + THUMB + "&format=png"
      );
    });
  }

  function colourOf(slide) {
    if (Array.isArray(slide.background) && slide.background.length >= 3) {
      return Promise.resolve(slide.background.slice(0, 3));
    }
    return fromThumbnail(slide.id);
  }

  // Never fails: without a colour the viewer keeps its default background.
  function apply(slide, element) {
    return colourOf(slide).then(
      function (rgb) {
        var css = "rgb(" + rgb.join(", ") + ")";
        element.style.backgroundColor = css;
        element.dataset.background = rgb.join(",");
        return rgb;
      },
      function () {
        return null;
      }
    );
  }

  ns.background = { apply: apply, borderMedian: borderMedian };
})((window.TileViewer = window.TileViewer || {}));
