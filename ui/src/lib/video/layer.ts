// The main window's video layer (src-tauri/src/video_layer.rs): in the desktop app on Linux the
// call view's pictures are drawn by the app over the page, not in it (measured: drawing them in
// the page was most of a video call's cost, docs/BENCHMARKS.md). The page says where each box is
// and what it has over each box (elements marked `data-over-video`: a name, a badge, a button, a
// smaller view; a speaking ring; an open dialog, a notice), which the layer leaves showing; the
// layer says when a tile's picture shows.
//
// Boxes say where they are whenever they could have moved: when one comes or goes, when it or
// the window is resized, when the page is hidden or shown, when the call view's elements change,
// and four times a second while any box is up (a box that moves without changing size: the
// small view dragged to another corner). Only a change is sent.

import type { VideoHole } from '../bindings/VideoHole';
import type { VideoLayerNews } from '../bindings/VideoLayerNews';
import type { VideoPlacement } from '../bindings/VideoPlacement';
import type { Fit } from './frames';

/** How often the boxes' places are read while any box is up. */
export const PLACE_EVERY_MS = 250;

/** What the page may have over a picture: marked elements, open dialogs, notices. */
export const OVER_VIDEO = '[data-over-video], dialog[open], [role="alert"]';
/** What lies over everything, a small view too. */
const OVER_ALL = 'dialog[open], [role="alert"]';

/** The width of a tile's speaking ring (Tile.svelte), left showing around a picture. */
export const RING_PX = 3;

export interface LayerBox {
  tile: string;
  /** The element whose box the picture fills. */
  element: HTMLElement;
  fit: () => Fit;
  mirror: boolean;
  /** Drawn after the others: a small view over another tile. */
  above: boolean;
  onpicture: (showing: boolean) => void;
}

export interface LayerBackend {
  videoLayer: (onNews: (news: VideoLayerNews) => void) => Promise<boolean>;
  placeVideo: (placements: VideoPlacement[]) => Promise<null>;
}

const boxes = new Set<LayerBox>();
const showing = new Set<string>();
let opened: Promise<boolean> | null = null;
let backendInUse: LayerBackend | null = null;
let lastSent = '';
let timer: ReturnType<typeof setInterval> | null = null;
let resized: ResizeObserver | null = null;
let mutated: MutationObserver | null = null;
let queued = false;

/** Whether this page has the layer (asked once; `false` when the app cannot draw over it). */
export function videoLayer(backend: LayerBackend): Promise<boolean> {
  backendInUse = backend;
  opened ??= Promise.resolve()
    .then(() => backend.videoLayer(hear))
    .catch(() => false);
  return opened;
}

function hear(news: VideoLayerNews) {
  if (news.showing) showing.add(news.tile);
  else showing.delete(news.tile);
  for (const box of boxes) if (box.tile === news.tile) box.onpicture(news.showing);
}

/** Shows `box` on the layer until the returned function is called. */
export function holdBox(box: LayerBox): () => void {
  boxes.add(box);
  resized ??= new ResizeObserver(placeSoon);
  resized.observe(box.element);
  if (!timer) {
    timer = setInterval(placeSoon, PLACE_EVERY_MS);
    window.addEventListener('resize', placeSoon);
    document.addEventListener('visibilitychange', placeSoon);
    mutated = new MutationObserver(placeSoon);
    mutated.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['class', 'data-over-video', 'style', 'open'] });
  }
  if (showing.has(box.tile)) box.onpicture(true);
  placeSoon();
  return () => {
    boxes.delete(box);
    resized?.unobserve(box.element);
    if (boxes.size === 0 && timer) {
      clearInterval(timer);
      timer = null;
      window.removeEventListener('resize', placeSoon);
      document.removeEventListener('visibilitychange', placeSoon);
      mutated?.disconnect();
      mutated = null;
    }
    placeSoon();
  };
}

/** Says the boxes' places again soon (once, however many asked meanwhile). */
export function placeSoon() {
  if (queued) return;
  queued = true;
  queueMicrotask(() => {
    queued = false;
    placeNow();
  });
}

function rectOf(element: Element): VideoHole {
  const { x, y, width, height } = element.getBoundingClientRect();
  return { x, y, width, height };
}

function overlaps(a: VideoHole, b: VideoHole): boolean {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}

/**
 * What the page has over `box`: marked elements that are not around it, and its tile's ring. A
 * small view lies over the tile under it, so only its own tile's marks, dialogs and notices are
 * over it.
 */
function holesOver(box: LayerBox, at: VideoHole, marked: Element[]): VideoHole[] {
  const tile = box.element.closest('.tile');
  const over = (element: Element) => !element.contains(box.element) && (!box.above || (tile?.contains(element) ?? false) || element.matches(OVER_ALL));
  const holes = marked.filter(over).map(rectOf);
  if (tile?.classList.contains('speaking')) {
    const ring = rectOf(tile);
    holes.push(
      { x: ring.x, y: ring.y, width: ring.width, height: RING_PX },
      { x: ring.x, y: ring.y + ring.height - RING_PX, width: ring.width, height: RING_PX },
      { x: ring.x, y: ring.y, width: RING_PX, height: ring.height },
      { x: ring.x + ring.width - RING_PX, y: ring.y, width: RING_PX, height: ring.height },
    );
  }
  return holes.filter((hole) => hole.width > 0 && hole.height > 0 && overlaps(hole, at));
}

/** The boxes as the app takes them, the small views last: where they are now, or none while the page is hidden. */
export function placements(): VideoPlacement[] {
  if (document.visibilityState === 'hidden') return [];
  const marked = [...document.querySelectorAll(OVER_VIDEO)];
  const scale = window.devicePixelRatio || 1;
  const ordered = [...boxes].sort((a, b) => Number(a.above) - Number(b.above));
  return ordered.map((box) => {
    const at = rectOf(box.element);
    return { tile: box.tile, ...at, scale, fit: box.fit(), mirror: box.mirror, holes: holesOver(box, at, marked) };
  });
}

function placeNow() {
  const backend = backendInUse;
  if (!backend) return;
  const placed = placements();
  const message = JSON.stringify(placed);
  if (message === lastSent) return;
  lastSent = message;
  void backend.placeVideo(placed).catch(() => {
    // Said again at the next reading.
    lastSent = '';
  });
}
