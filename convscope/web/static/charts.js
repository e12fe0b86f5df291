// Curves against epochs in side-by-side panels (loss, accuracy): the designer's live chart and the
// compare view's overlay. A series is {points: [[epoch, value], ...], colour, dots, dashed}.

// The frame, the value ticks and the epoch ticks of one panel (the Training view draws with it too).
export function axes(context, box, yMax, label, xMax) {
  const { left, top, width, height } = box;
  context.strokeStyle = "#999";
  context.lineWidth = 1;
  context.setLineDash([]);
  context.strokeRect(left, top, width, height);
  context.fillStyle = "#333";
  context.font = "12px system-ui, sans-serif";
  context.textAlign = "left";
  context.fillText(label, left, top - 6);
  context.textAlign = "right";
  for (const fraction of [0, 0.5, 1]) {
    context.fillText((yMax * fraction).toFixed(2), left - 4, top + height - fraction * height + 4);
  }
  context.textAlign = "center";
  const ticks = Math.min(xMax, 10);
  for (let i = 0; i <= ticks; i++) {
    const epoch = (xMax * i) / ticks;
    context.fillText(Number(epoch.toFixed(1)).toString(), left + (epoch / xMax) * width, top + height + 14);
  }
  context.fillText("epoch", left + width / 2, top + height + 28);
  context.textAlign = "left";
}

function curve(context, box, series, yMax, xMax) {
  const { left, top, width, height } = box;
  const x = (p) => left + (p[0] / xMax) * width;
  const y = (p) => top + height - (Math.min(p[1], yMax) / yMax) * height;
  context.strokeStyle = series.colour;
  context.fillStyle = series.colour;
  context.lineWidth = 2;
  context.setLineDash(series.dashed ? [6, 4] : []);
  context.beginPath();
  series.points.forEach((p, i) => (i ? context.lineTo(x(p), y(p)) : context.moveTo(x(p), y(p))));
  context.stroke();
  context.setLineDash([]);
  if (series.dots) {
    for (const p of series.points) {
      context.beginPath();
      context.arc(x(p), y(p), 3.5, 0, 2 * Math.PI);
      context.fill();
    }
  }
}

// panels: [{title, series, yMax (optional: from the data)}]; xMax: the last epoch on the axis.
export function drawPanels(canvas, panels, xMax) {
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const share = canvas.width / panels.length;
  panels.forEach((panel, i) => {
    const values = panel.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const yMax = panel.yMax || Math.max(0.5, ...values) * 1.05;
    const box = { left: i * share + 48, top: 24, width: share - 72, height: canvas.height - 70 };
    axes(context, box, yMax, panel.title, Math.max(xMax, 1));
    for (const series of panel.series) curve(context, box, series, yMax, Math.max(xMax, 1));
  });
}

export const RUN_COLOURS = ["#c0392b", "#2e6da4", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"];
