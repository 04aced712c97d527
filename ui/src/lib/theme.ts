// Applies the light, dark or system theme: the CSS variables in app.css follow `data-theme`.

import type { Theme } from './bindings/Theme';

export function applyTheme(theme: Theme): void {
  document.documentElement.dataset.theme = theme;
}
