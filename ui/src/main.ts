// Entry point: the main window gets the app, the `incoming` window the call banner, the `mini`
// window the floating view of a call in progress.

import './app.css';
import { mount } from 'svelte';
import App from './App.svelte';
import Banner from './lib/components/Banner.svelte';
import MiniCall from './lib/components/MiniCall.svelte';
import { backend } from './lib/backend';
import { systemClock } from './lib/clock';

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');

const label = backend.windowLabel();
if (label === 'incoming') {
  mount(Banner, { target, props: { backend } });
} else if (label === 'mini') {
  mount(MiniCall, { target, props: { backend, clock: systemClock } });
} else {
  mount(App, { target, props: { backend, clock: systemClock } });
}
