/** A time chart drawn by uPlot (canvas): x is unix seconds, one line per series. */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

export interface ChartSeries {
  label: string;
  /** The axis it is read against: "left" or "right". */
  scale: "left" | "right";
  color: string;
  unit: string;
}

export function TimeChart(props: { title: string; series: ChartSeries[]; data: number[][] }) {
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const element = holder.current;
    if (!element) return;
    const width = () => Math.max(240, element.clientWidth);
    const units = (scale: string) => props.series.find((s) => s.scale === scale)?.unit ?? "";
    plot.current = new uPlot(
      {
        title: props.title,
        width: width(),
        height: 220,
        scales: { x: { time: true } },
        series: [
          {},
          ...props.series.map((s) => ({
            label: s.label,
            scale: s.scale,
            stroke: s.color,
            width: 2,
            points: { show: true },
          })),
        ],
        axes: [
          {},
          { scale: "left", values: (_u: uPlot, ticks: number[]) => ticks.map((t) => `${t}${units("left")}`) },
          {
            scale: "right",
            side: 1,
            grid: { show: false },
            values: (_u: uPlot, ticks: number[]) => ticks.map((t) => `${t}${units("right")}`),
          },
        ],
      },
      props.data as uPlot.AlignedData,
      element,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: width(), height: 220 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [props.title]);

  useEffect(() => {
    plot.current?.setData(props.data as uPlot.AlignedData);
  }, [props.data]);

  const points = props.data[0]?.length ?? 0;
  return (
    <figure class="chart">
      <div ref={holder} data-points={points} role="img" aria-label={`${props.title}: ${points} points`} />
    </figure>
  );
}
