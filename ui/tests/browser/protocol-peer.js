// A third-party Hark client in a browser page, written from docs/PROTOCOL.md alone: the
// browser's own WebSocket and WebRTC, no Hark code, one peer connection per other person (the
// mesh of section 4). interop.test.mjs loads it into Chromium (fake camera) to call hark-cli and
// be called by it, 1:1 and in a group, with video both ways. It reads the frame number
// stamped on every picture it shows (the test pattern's stamp: 32 blocks across the top, 24 bits
// of number and an 8-bit check), so the test can tell decoded frames from a frozen or broken
// picture.

/** The stamp's check byte of a 24-bit number (as the test pattern makes it). */
function checkByte(number) {
  const rotl = (byte, n) => ((byte << n) | (byte >> (8 - n))) & 0xff;
  const [a, b, c] = [number & 0xff, (number >> 8) & 0xff, (number >> 16) & 0xff];
  return a ^ rotl(b, 3) ^ rotl(c, 5) ^ 0xa5;
}

/** Rows of the stamp on a picture `width` wide (its blocks are as tall as they are wide). */
export const stampRows = (width) => Math.max(1, Math.floor(width / 32));

/**
 * The number stamped on a picture `width` wide, or null when the stamp does not read back with
 * its check. `luma(col, row)` gives a pixel of its top rows on a 0–255 scale where the stamp's
 * dark and light (video levels 16 and 235) sit at about 0 and 255, so the threshold is 128. Each
 * block's middle half is averaged.
 */
export function readStamp(luma, width) {
  const rows = stampRows(width);
  if (rows < 2) return null;
  let word = 0;
  for (let index = 0; index < 32; index++) {
    let from = Math.floor((index * width) / 32);
    let to = Math.floor(((index + 1) * width) / 32);
    [from, to] = [from + Math.floor((to - from) / 4), to - Math.floor((to - from) / 4)];
    let sum = 0;
    let count = 0;
    for (let row = Math.floor(rows / 4); row < rows - Math.floor(rows / 4); row++) {
      for (let col = from; col < Math.max(to, from + 1); col++) {
        sum += luma(col, row);
        count++;
      }
    }
    word = word * 2 + (sum / Math.max(count, 1) > 128 ? 1 : 0);
  }
  const number = Math.floor(word / 256);
  return (word & 0xff) === checkByte(number) ? number : null;
}

/** Draws the stamp of a 24-bit `number` across the top of a 2D canvas `width` wide. */
function drawStamp(context, width, number) {
  const word = number * 256 + checkByte(number);
  const rows = stampRows(width);
  for (let index = 0; index < 32; index++) {
    const from = Math.floor((index * width) / 32);
    const to = Math.floor(((index + 1) * width) / 32);
    context.fillStyle = Math.floor(word / 2 ** (31 - index)) % 2 === 1 ? '#ebebeb' : '#101010';
    context.fillRect(from, 0, to - from, rows);
  }
}

/** Wall-clock ms modulo 2^24, as a clock stamp carries it (hark-cli's `test-clock` camera too). */
const clockStamp = (ms) => Math.floor(ms) % 2 ** 24;

/** The number stamped on the picture `video` shows now (`width` wide), read through `canvas`. */
function stampShown(video, canvas, context, width) {
  const rows = stampRows(width);
  if (canvas.width !== width || canvas.height !== rows) [canvas.width, canvas.height] = [width, rows];
  context.drawImage(video, 0, 0, width, rows, 0, 0, width, rows);
  const rgba = context.getImageData(0, 0, width, rows).data;
  return readStamp((col, row) => {
    const at = (row * width + col) * 4;
    return 0.299 * rgba[at] + 0.587 * rgba[at + 1] + 0.114 * rgba[at + 2];
  }, width);
}

export class HarkPeer {
  /** @param {string} wsUrl the server's `/v1/ws` @param {string} token from `POST /v1/login` */
  constructor(wsUrl, token) {
    this.wsUrl = wsUrl;
    this.token = token;
    this.nextId = 1;
    /** Answers waited for, by request id. */
    this.pending = new Map();
    /** Server events not yet taken, and who waits for the next one. */
    this.events = [];
    this.waiters = [];
    /** Everything seen, for the test's report. */
    this.log = [];
    this.callId = null;
    /** Whether we are joined in the call (the caller from its invite on, others once accepted). */
    this.joined = false;
    /**
     * One link per other person in the call: its peer connection, and the frame numbers read
     * off their video in the order shown.
     * @type {Map<string, { pc: RTCPeerConnection, stamps: (number | null)[], frames: number, firstFrameAt: number | null, size?: string, video?: HTMLVideoElement }>}
     */
    this.links = new Map();
    /** Links being closed: what they heard is still being read. */
    this.dropping = [];
    /** What was read off each person's video, by user, once their link is closed. */
    this.seen = {};
    /**
     * Set before a call: the links pass encoded frames through script (Chromium's encoded
     * insertable streams), so that `garbage` can replace the VP8 this page sends.
     */
    this.insertable = false;
    /** While true, every video frame sent is garbage: random bytes claiming to be a keyframe. */
    this.garbage = false;
    this.garbageSent = 0;
    /** False: count presented frames only, without drawing them to read stamps (for benchmarks). */
    this.readStamps = true;
    /**
     * Set before `openCamera`: the camera is a canvas stamped with the wall-clock time each
     * picture is drawn, and each picture shown is read for how long capture -> shown took
     * (`latencies` of its link, in ms; the far side must be on this machine's clock).
     */
    this.clock = false;
    /** When this page last accepted a call (performance.now()). */
    this.acceptedAt = null;
    /** The same instant on the wall clock (Date.now()), to compare with another page's. */
    this.acceptedWallAt = null;
    /** Received audio is played out (Chromium decodes only what it plays); set by `openMicrophone`. */
    this.playAudio = false;
    /** Signals are handled one at a time, in order: a candidate must not overtake its offer. */
    this.signals = Promise.resolve();
  }

  async signIn() {
    this.ws = new WebSocket(this.wsUrl);
    await new Promise((resolve, reject) => {
      this.ws.onopen = resolve;
      this.ws.onerror = () => reject(new Error('the WebSocket did not open'));
    });
    this.ws.onmessage = (message) => this.onFrame(JSON.parse(message.data));
    const welcome = await this.request({ type: 'hello', token: this.token, protocol: [1], device: 'chromium', client: 'interop-test/1' });
    if (welcome.type !== 'welcome') throw new Error(`hello: ${JSON.stringify(welcome)}`);
    this.iceServers = welcome.ice_servers ?? [];
    return welcome.user;
  }

  onFrame(frame) {
    this.log.push(frame.type === 'signal' ? `signal ${frame.payload.kind} from ${frame.from}` : frame.user ? `${frame.type} ${frame.user}` : frame.type);
    if (frame.re !== undefined && this.pending.has(frame.re)) {
      this.pending.get(frame.re)(frame);
      this.pending.delete(frame.re);
      return;
    }
    if (frame.call_id !== undefined && frame.call_id === this.callId) {
      if (frame.type === 'signal') {
        this.signals = this.signals.then(() => this.onSignal(frame)).catch((error) => this.log.push(`signal failed: ${error}`));
      } else if (frame.type === 'call.accepted' && this.joined) {
        // Whoever joins after us waits for our offer (the earlier joiner offers). While we only
        // ring, someone accepting joined before us: they offer to us when we accept.
        this.signals = this.signals.then(() => this.offer(frame.user)).catch((error) => this.log.push(`offer failed: ${error}`));
      } else if (frame.type === 'call.left') {
        this.drop(frame.user);
      }
    }
    const waiter = this.waiters.findIndex((w) => w.test(frame));
    if (waiter >= 0) {
      this.waiters.splice(waiter, 1)[0].resolve(frame);
    } else {
      this.events.push(frame);
    }
  }

  request(body) {
    const id = String(this.nextId++);
    this.ws.send(JSON.stringify({ ...body, id }));
    return new Promise((resolve) => this.pending.set(id, resolve));
  }

  /** The next server event of `type` (one that came already, or the next to come). */
  next(type) {
    const test = (frame) => frame.type === type;
    const at = this.events.findIndex(test);
    if (at >= 0) return Promise.resolve(this.events.splice(at, 1)[0]);
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }

  /** The microphone alone, for audio calls; what arrives is played out. */
  async openMicrophone() {
    this.local = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.playAudio = true;
  }

  /**
   * Resolves with the wall-clock time (Date.now()) the first decoded audio from `user` was played
   * out: the first stats reading, taken every 2 ms, whose inbound audio has samples that were
   * not concealment. Gives up (null) after `within` ms.
   */
  async firstAudio(user, within = 10_000) {
    const until = performance.now() + within;
    while (performance.now() < until) {
      const pc = this.links.get(user)?.pc;
      if (pc) {
        const inbound = [...(await pc.getStats()).values()].find((s) => s.type === 'inbound-rtp' && s.kind === 'audio');
        if (inbound && (inbound.totalSamplesReceived ?? 0) - (inbound.concealedSamples ?? 0) > 0) return Date.now();
      }
      await new Promise((done) => setTimeout(done, 2));
    }
    return null;
  }

  async openCamera(width = 640, height = 360) {
    if (!this.clock) {
      this.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width, height, frameRate: 30 } });
      return;
    }
    const audio = await navigator.mediaDevices.getUserMedia({ audio: true });
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [width, height];
    const context = canvas.getContext('2d');
    let frame = 0;
    // A moving square under the stamp, so the encoder has motion to code as it has with a camera.
    const draw = () => {
      context.fillStyle = '#406080';
      context.fillRect(0, 0, width, height);
      context.fillStyle = '#e0c040';
      context.fillRect((frame * 4) % width, height / 2, height / 4, height / 4);
      frame++;
      drawStamp(context, width, clockStamp(Date.now()));
    };
    draw();
    this.clockTimer = setInterval(draw, 1000 / 30);
    const video = canvas.captureStream(30).getVideoTracks();
    this.local = new MediaStream([...audio.getAudioTracks(), ...video]);
  }

  /** The link to `user`: a peer connection sending the camera and microphone (audio m-line first). */
  link(user) {
    const known = this.links.get(user);
    if (known) return known;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', encodedInsertableStreams: this.insertable });
    const link = { pc, stamps: [], latencies: [], frames: 0, firstFrameAt: null };
    this.links.set(user, link);
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate) {
        this.signal(user, { kind: 'end_of_candidates' });
      } else if (candidate.candidate) {
        this.signal(user, { kind: 'candidate', candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_mline_index: candidate.sdpMLineIndex, ufrag: candidate.usernameFragment });
      }
    };
    pc.onconnectionstatechange = () => this.log.push(`pc ${user} ${pc.connectionState}`);
    pc.ontrack = ({ track, streams, receiver }) => {
      if (this.insertable) {
        // With insertable streams on, received frames flow only through script: pass them on.
        const { readable, writable } = receiver.createEncodedStreams();
        readable.pipeTo(writable);
      }
      if (track.kind === 'video') this.show(link, streams[0] ?? new MediaStream([track]));
      // Chromium plays out (and so decodes) received audio only into a media element; a video
      // call's plays through its video element.
      if (track.kind === 'audio' && this.playAudio) {
        link.audio = new Audio();
        link.audio.srcObject = new MediaStream([track]);
        link.audio.play().catch((error) => this.log.push(`play audio: ${error}`));
      }
    };
    return link;
  }

  addLocalTracks(pc) {
    for (const kind of ['audio', 'video']) {
      for (const track of this.local.getTracks().filter((t) => t.kind === kind)) {
        // `keepResolution`: a benchmark holding a 720p call keeps it at 720p on a busy machine
        // (Chromium otherwise trades resolution for frame rate), as Hark does.
        if (kind === 'video' && this.keepResolution) track.contentHint = 'detail';
        const sender = pc.addTrack(track, this.local);
        if (this.insertable) this.passOrSpoil(sender, kind);
      }
    }
  }

  /**
   * Passes a sender's encoded frames on, or, for video while `garbage` is set, replaces each with
   * random bytes whose frame tag says keyframe and whose start code is wrong: VP8 that no decoder
   * takes, packetized and sent as usual.
   */
  passOrSpoil(sender, kind) {
    const { readable, writable } = sender.createEncodedStreams();
    const spoil = new TransformStream({
      transform: (frame, controller) => {
        if (kind === 'video' && this.garbage) {
          const bytes = crypto.getRandomValues(new Uint8Array(frame.data.byteLength));
          bytes[0] &= 0xfe;
          bytes.set([0, 0, 0], 3);
          frame.data = bytes.buffer;
          this.garbageSent++;
        }
        controller.enqueue(frame);
      },
    });
    readable.pipeThrough(spoil).pipeTo(writable);
  }

  signal(to, payload) {
    return this.request({ type: 'signal', call_id: this.callId, to, payload });
  }

  async offer(user) {
    const { pc } = this.link(user);
    this.addLocalTracks(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await this.signal(user, { kind: 'offer', sdp: pc.localDescription.sdp });
  }

  async onSignal({ from, payload }) {
    if (payload.kind === 'offer') {
      const { pc } = this.link(from);
      await pc.setRemoteDescription({ type: 'offer', sdp: payload.sdp });
      this.addLocalTracks(pc);
      await pc.setLocalDescription(await pc.createAnswer());
      await this.signal(from, { kind: 'answer', sdp: pc.localDescription.sdp });
    } else if (payload.kind === 'answer') {
      await this.links.get(from)?.pc.setRemoteDescription({ type: 'answer', sdp: payload.sdp });
    } else if (payload.kind === 'candidate') {
      await this.links.get(from)?.pc.addIceCandidate({ candidate: payload.candidate, sdpMid: payload.sdp_mid, sdpMLineIndex: payload.sdp_mline_index, usernameFragment: payload.ufrag });
    }
    // end_of_candidates, camera and kinds added later need nothing here.
  }

  /** Calls `users` with `media` (video by default); each gets an offer when they accept (see onFrame). */
  async call(users, media = 'video') {
    const ok = await this.request({ type: 'call.invite', to: users, media });
    if (ok.type !== 'ok') throw new Error(`call.invite: ${JSON.stringify(ok)}`);
    this.callId = ok.call_id;
    this.joined = true;
  }

  /** Leaves the call. */
  async hangup() {
    return this.request({ type: 'call.hangup', call_id: this.callId });
  }

  /**
   * Accepts the next incoming call, of `media` (video by default), `after` ms after it rang; the
   * people joined before us send the offers.
   */
  async answer(media = 'video', after = 0) {
    const incoming = await this.next('call.incoming');
    if (incoming.media !== media) throw new Error(`a ${incoming.media} call`);
    this.callId = incoming.call_id;
    if (after > 0) await new Promise((done) => setTimeout(done, after));
    this.acceptedAt = performance.now();
    this.acceptedWallAt = Date.now();
    const ok = await this.request({ type: 'call.accept', call_id: incoming.call_id });
    if (ok.type !== 'ok') throw new Error(`call.accept: ${JSON.stringify(ok)}`);
    // From here on, a `call.accepted` is someone joining after us (the server sends its ok first).
    this.joined = true;
    return { from: incoming.from, invitees: incoming.invitees, joined: ok.joined };
  }

  /**
   * Resolves when the call ends (the others hang up) with `call.ended` and what was read off each
   * person's video (also those who left earlier), and closes every link.
   */
  async ended() {
    const ended = await this.next('call.ended');
    for (const user of [...this.links.keys()]) this.drop(user);
    await Promise.all(this.dropping);
    this.dropping = [];
    const seen = this.seen;
    this.seen = {};
    this.callId = null;
    this.joined = false;
    return { ended, seen };
  }

  /** Closes the link to `user` (they left, or the call ended), keeping what was read off it. */
  drop(user) {
    const link = this.links.get(user);
    if (!link) return;
    this.links.delete(user);
    // What was heard is read before the link closes; `ended` waits for it.
    this.dropping = [...this.dropping, this.heard(link.pc).catch(() => null).then((audio) => this.close(user, link, audio))];
  }

  close(user, link, audio) {
    link.pc.close();
    link.audio?.pause();
    link.video?.remove();
    link.video = undefined;
    this.seen[user] = { stamps: link.stamps, latencies: link.latencies, size: link.size, frames: link.frames, firstFrameAt: link.firstFrameAt, audio };
  }

  /** What Chromium's receiver made of a link's audio: the codec it came in, its energy and samples (getStats). */
  async heard(pc) {
    const stats = [...(await pc.getStats()).values()];
    const inbound = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'audio');
    if (!inbound) return null;
    const codec = stats.find((s) => s.id === inbound.codecId);
    const red = (description) => /a=rtpmap:\d+ red\/48000\/2/.test(description?.sdp ?? '');
    return {
      codec: codec?.mimeType ?? null,
      red: red(pc.currentLocalDescription) && red(pc.currentRemoteDescription),
      energy: inbound.totalAudioEnergy ?? 0,
      level: inbound.audioLevel ?? 0,
      samples: inbound.totalSamplesReceived ?? 0,
      concealed: inbound.concealedSamples ?? 0,
      packets: inbound.packetsReceived ?? 0,
    };
  }

  /** Plays a remote video and reads the stamp of every frame the browser presents. */
  show(link, stream) {
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = stream;
    document.body.append(video);
    link.video = video;
    // Only the stamp's band of each picture is drawn and read back.
    const canvas = document.createElement('canvas');
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const onFrame = (now, metadata) => {
      if (link.video !== video) return;
      const { videoWidth: width, videoHeight: height } = video;
      link.frames++;
      link.firstFrameAt ??= performance.now();
      if (width > 0 && height > 0) {
        link.size = `${width}x${height}`;
        const stamp = this.readStamps || this.clock ? stampShown(video, canvas, context, width) : null;
        if (this.readStamps) link.stamps.push(stamp);
        if (this.clock && stamp !== null) {
          // When the frame was decoded (its last packet's arrival plus the time to decode it, as
          // Chromium reports them for WebRTC video), else when it was handed to the compositor;
          // on the wall clock.
          const decoded = metadata.receiveTime !== undefined && metadata.processingDuration !== undefined;
          const at = decoded ? metadata.receiveTime + 1000 * metadata.processingDuration : metadata.presentationTime;
          link.latencyPoint = decoded ? 'decoded' : 'presented';
          link.latencies.push((clockStamp(Date.now() - (performance.now() - at)) - stamp + 2 ** 24) % 2 ** 24);
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.play().catch((error) => this.log.push(`play: ${error}`));
  }

}
