// Entry point: the main window gets the app, the `incoming` window the call banner.

import './app.css';
import { mount } from 'svelte';
import App from './App.svelte';
import Banner from './lib/components/Banner.svelte';
import { backend } from './lib/backend';
import { systemClock } from './lib/clock';

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');

if (backend.windowLabel() === 'incoming') {
  mount(Banner, { target, props: { backend } });
} else {
  mount(App, { target, props: { backend, clock: systemClock } });
}
