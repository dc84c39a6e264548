/* Slide list: GET /slides, one card per slide with its thumbnail, linking to the viewer. */
(function () {
  "use strict";

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  function card(slide) {
    var item = document.createElement("li");
    item.className = "slide";
    item.dataset.slideId = slide.id;
    var link = document.createElement("a");
    link.href = "/viewer/" + encodeURIComponent(slide.id);
    var img = document.createElement("img");
    img.src = "/slides/" + encodeURIComponent(slide.id) + "/thumbnail?max=256";
    img.alt = "";
    img.loading = "lazy";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = slide.name || slide.id;
    var meta = document.createElement("span");
    meta.className = "meta";
    var base = slide.levels && slide.levels[0];
    var parts = [];
    if (base) {
      parts.push(base.width + " \u00d7 " + base.height);
      parts.push(slide.levels.length + (slide.levels.length === 1 ? " level" : " levels"));
    }
    if (slide.path) {
      parts.push(slide.path);
    }
    meta.textContent = parts.join(" \u00b7 ");
    link.appendChild(img);
    link.appendChild(name);
    link.appendChild(meta);
    item.appendChild(link);
    return item;
  }

  function render(slides) {
    var list = document.getElementById("slides");
    slides.forEach(function (slide) {
      list.appendChild(card(slide));
    });
    document.getElementById("slide-total").textContent =
      slides.length + (slides.length === 1 ? " slide" : " slides");
    document.body.dataset.slideCount = String(slides.length);
    setStatus(slides.length === 0 ? "No slides found." : "");
  }

  setStatus("Loading slides\u2026");
  fetch("/slides", { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.json();
    })
    .then(function (data) {
      render(data.slides || []);
    })
    .catch(function (error) {
      document.body.dataset.error = String(error.message || error);
      setStatus("Could not list slides: " + (error.message || error));
    });
})();
