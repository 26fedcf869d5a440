// The editor's document with undo and redo. Every change names whether it is recorded:
// selection and measurement are not; typing into one field is one step while it goes on
// (changes with the same key less than COALESCE_MS apart merge into a single step).
import { useCallback, useRef, useState } from "react";
import type { Doc } from "./model";

const COALESCE_MS = 1500;
const LIMIT = 200;

/** `false`: not recorded; `true`: one step; a string: merged with the previous change of the
 * same key made moments before. */
export type Recording = boolean | string;

export interface Saved {
  past: Doc[];
  future: Doc[];
}

export function useHistory(initial: () => Doc, saved?: Saved) {
  const [doc, setDoc] = useState(initial);
  const docRef = useRef(doc);
  const past = useRef<Doc[]>(saved?.past ?? []);
  const future = useRef<Doc[]>(saved?.future ?? []);
  const last = useRef<{ key: string; at: number } | null>(null);

  const show = useCallback((next: Doc) => {
    docRef.current = next;
    setDoc(next);
  }, []);

  const push = useCallback((previous: Doc) => {
    past.current.push(previous);
    if (past.current.length > LIMIT) past.current.shift();
    future.current = [];
  }, []);

  const update = useCallback(
    (change: (doc: Doc) => Doc, record: Recording = true) => {
      const previous = docRef.current;
      const next = change(previous);
      if (next === previous) return;
      if (record !== false) {
        const now = Date.now();
        const key = typeof record === "string" ? record : null;
        const merge = key !== null && last.current?.key === key && now - last.current.at < COALESCE_MS;
        if (!merge) push(previous);
        last.current = key === null ? null : { key, at: now };
      }
      show(next);
    },
    [push, show],
  );

  /** Records the current state as a step before a gesture (a drag) that changes it bit by
   * bit without recording; `settle` drops the step if the gesture changed nothing. */
  const checkpoint = useCallback(() => {
    push(docRef.current);
    last.current = null;
  }, [push]);

  const settle = useCallback((same: (before: Doc, after: Doc) => boolean) => {
    const before = past.current[past.current.length - 1];
    if (before && same(before, docRef.current)) past.current.pop();
  }, []);

  const undo = useCallback(() => {
    const previous = past.current.pop();
    if (!previous) return;
    future.current.push(docRef.current);
    last.current = null;
    show(previous);
  }, [show]);

  const redo = useCallback(() => {
    const next = future.current.pop();
    if (!next) return;
    past.current.push(docRef.current);
    last.current = null;
    show(next);
  }, [show]);

  /** Starts over from a loaded document. */
  const reset = useCallback(
    (next: Doc) => {
      past.current = [];
      future.current = [];
      last.current = null;
      show(next);
    },
    [show],
  );

  return {
    doc,
    docRef,
    update,
    checkpoint,
    settle,
    undo,
    redo,
    reset,
    canUndo: past.current.length > 0,
    canRedo: future.current.length > 0,
    saved: (): Saved => ({ past: past.current, future: future.current }),
  };
}
