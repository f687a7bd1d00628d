// How numbers and times read on the console: the same units as the CLI
// (hakit/rfs/progress.py: KiB, MiB; "1 min 05 s").

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n: number): string {
  let v = n;
  for (const unit of UNITS) {
    if (Math.abs(v) < 1024 || unit === UNITS[UNITS.length - 1]) {
      return unit === "B" ? `${Math.round(v)} B` : `${v.toFixed(1)} ${unit}`;
    }
    v /= 1024;
  }
  return `${n} B`;
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const pad = (x: number): string => String(x).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** An epoch time (seconds) as local date and time, to the second. */
export function when(at: number | null | undefined): string {
  if (at === null || at === undefined) return "";
  const d = new Date(at * 1000);
  const pad = (x: number): string => String(x).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function clock(at: number): string {
  return when(at).slice(11);
}
