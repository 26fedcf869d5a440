// Light or dark: the system's setting (prefers-color-scheme), followed live, unless the user
// picked one with the toggle (remembered in localStorage). The effective theme is the
// `data-theme` attribute of <html>, which the stylesheets key on.
import { useSyncExternalStore } from "react";

export type ThemeChoice = "system" | "light" | "dark";
export type Theme = "light" | "dark";

const STORAGE = "heddle.theme";
const CHOICES: ThemeChoice[] = ["system", "dark", "light"];
const query = window.matchMedia("(prefers-color-scheme: dark)");
const listeners = new Set<() => void>();

function stored(): ThemeChoice {
  const value = localStorage.getItem(STORAGE);
  return value === "light" || value === "dark" ? value : "system";
}

let choice: ThemeChoice = stored();
let snapshot = { choice, theme: effective() };

function effective(): Theme {
  if (choice !== "system") return choice;
  return query.matches ? "dark" : "light";
}

function apply(): void {
  snapshot = { choice, theme: effective() };
  document.documentElement.dataset.theme = snapshot.theme;
  document.documentElement.style.colorScheme = snapshot.theme;
  for (const listener of listeners) listener();
}

query.addEventListener("change", apply);
apply();

/** The next choice of the toggle: system → dark → light → system. */
export function cycleTheme(): void {
  choice = CHOICES[(CHOICES.indexOf(choice) + 1) % CHOICES.length];
  if (choice === "system") localStorage.removeItem(STORAGE);
  else localStorage.setItem(STORAGE, choice);
  apply();
}

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useTheme(): { choice: ThemeChoice; theme: Theme } {
  return useSyncExternalStore(subscribe, () => snapshot);
}
