//! A call-quality score per person: the ITU-T G.107 (06/2015) E-model's transmission rating R
//! and the MOS it maps to (Annex B), from what the link measures (loss, round-trip time, jitter).
//!
//! Everything the E-model asks that a softphone cannot measure (loudness ratings, room and
//! circuit noise, sidetone, echo loss) takes G.107's default; with no impairment at all that
//! gives R = 93.2, the model's best narrowband call. Delays: the absolute one-way delay Ta is
//! half the round trip plus the playout buffer and Opus's own 26.5 ms (a 20 ms frame and 6.5 ms
//! of look-ahead); the echo path's T is taken equal to Ta and the four-wire loop's Tr to 2·Ta,
//! as is usual when one delay is all there is.
//!
//! Opus has no published equipment impairment (ITU-T G.113 lists none, and Opus's authors know
//! of no such work), so this assumes Ie = 0 (no worse than G.711 on the narrowband scale, which
//! stops at 93.2) and G.113's Bpl = 25.1 of G.711 with concealment, the nearest published codec
//! with good concealment; Opus with in-band FEC likely does better, so the score errs low.
//! Loss counts as random (BurstR = 1) until burst lengths are measured.

/// Opus's delay of its own: a 20 ms frame and 6.5 ms of encoder look-ahead.
pub const OPUS_DELAY_MS: f64 = 26.5;
/// The playout buffer's least depth (one 20 ms frame: it starts on the first packet, `jitter.rs`).
pub const MIN_PLAYOUT_MS: f64 = 20.0;

/// How a codec stands up to loss, in E-model terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie with no loss.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

/// Opus as scored here (see the module's note: an assumption, not a published value).
pub const OPUS: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };

/// What a link measured, as the E-model takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Absolute one-way (mouth to ear) delay Ta, ms.
    pub one_way_delay_ms: f64,
    /// Packets lost, percent (Ppl).
    pub loss_percent: f64,
    /// Burst ratio (1: random loss).
    pub burst_ratio: f64,
    /// The codec.
    pub codec: CodecImpairment,
}

impl Impairments {
    /// A link's figures: `rtt_ms` round trip, `jitter_ms` inter-arrival jitter (the playout
    /// buffer holds about twice it, never under one frame), `loss_percent` lost, with Opus.
    pub fn measured(loss_percent: f64, rtt_ms: f64, jitter_ms: f64) -> Impairments {
        let playout = (2.0 * jitter_ms).max(MIN_PLAYOUT_MS);
        Impairments { one_way_delay_ms: rtt_ms / 2.0 + playout + OPUS_DELAY_MS, loss_percent: loss_percent.clamp(0.0, 100.0), burst_ratio: 1.0, codec: OPUS }
    }
}

/// The score: R (0–100; 93.2 at best with G.107's defaults) and its MOS (1–4.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Transmission rating R.
    pub r: f64,
    /// Estimated mean opinion score.
    pub mos: f64,
}

// G.107 Table 2's defaults, for all the model needs that no link measures.
const SLR: f64 = 8.0;
const RLR: f64 = 2.0;
const STMR: f64 = 15.0;
const LSTR: f64 = 18.0;
const DS: f64 = 3.0;
const TELR: f64 = 65.0;
const WEPL: f64 = 110.0;
const QDU: f64 = 1.0;
const NC: f64 = -70.0;
const NFOR: f64 = -64.0;
const PS: f64 = 35.0;
const PR: f64 = 35.0;
const ADVANTAGE: f64 = 0.0;
/// The default delay-sensitivity class: no delay impairment up to mT, at the slope sT.
const M_T: f64 = 100.0;
const S_T: f64 = 1.0;

/// The E-model's R and MOS for `impairments`.
pub fn score(impairments: &Impairments) -> Score {
    let ta = impairments.one_way_delay_ms.max(0.0);
    let (t, tr) = (ta, 2.0 * ta);
    let power_sum = |levels: &[f64]| 10.0 * levels.iter().map(|l| 10f64.powf(l / 10.0)).sum::<f64>().log10();

    // Basic signal-to-noise ratio, Ro.
    let olr = SLR + RLR;
    let nfo = NFOR + RLR;
    let pre = PR + 10.0 * (1.0 + 10f64.powf((10.0 - LSTR) / 10.0)).log10();
    let nor = RLR - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
    let nos = PS - SLR - DS - 100.0 + 0.004 * (PS - olr - DS - 14.0).powi(2);
    let no = power_sum(&[NC, nos, nor, nfo]);
    let ro = 15.0 - 1.5 * (SLR + no);

    // Simultaneous impairments, Is.
    let xolr = olr + 0.2 * (64.0 + no - RLR);
    let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
    let stmr_o = -10.0 * (10f64.powf(-STMR / 10.0) + (-t / 4.0).exp() * 10f64.powf(-TELR / 10.0)).log10();
    let ist = 12.0 * (1.0 + ((stmr_o - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0) - 28.0 * (1.0 + ((stmr_o + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
        - 13.0 * (1.0 + ((stmr_o - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
        + 29.0;
    let q = 37.0 - 15.0 * QDU.max(1.0).log10();
    let g = 1.07 + 0.258 * q + 0.0602 * q * q;
    let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
    let z = 46.0 / 30.0 - g / 40.0;
    let iq = 15.0 * (1.0 + 10f64.powf(y) + 10f64.powf(z)).log10();
    let is = iolr + ist + iq;

    // Delay impairments, Id: talker echo, listener echo, delay itself.
    let idte = if t < 1.0 {
        // Echo this soon is heard as sidetone.
        0.0
    } else {
        let terv = TELR - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10() + 6.0 * (-0.3 * t * t).exp();
        let roe = -1.5 * (no - RLR);
        let re = 80.0 + 2.5 * (terv - 14.0);
        ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp())
    };
    let rle = 10.5 * (WEPL + 7.0) * (tr + 1.0).powf(-0.25);
    let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt();
    let idd = if ta <= M_T {
        0.0
    } else {
        let x = (ta / M_T).log10() / 2f64.log10();
        let e = 6.0 * S_T;
        25.0 * ((1.0 + x.powf(e)).powf(1.0 / e) - 3.0 * (1.0 + (x / 3.0).powf(e)).powf(1.0 / e) + 2.0)
    };
    let id = idte + idle + idd;

    // Equipment impairment under loss, Ie,eff.
    let CodecImpairment { ie, bpl } = impairments.codec;
    let ppl = impairments.loss_percent;
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl / impairments.burst_ratio.max(1.0) + bpl);

    let r = (ro - is - id - ie_eff + ADVANTAGE).clamp(0.0, 100.0);
    Score { r, mos: mos(r) }
}

/// G.107 Annex B's MOS for a rating `r` (at least 1: the polynomial dips under it below R 6.5).
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// The scores a call gathers, from all its links, for its record: their mean and the worst.
#[derive(Debug, Default, Clone)]
pub struct CallScores {
    sum: f64,
    count: u32,
    worst: f64,
}

impl CallScores {
    /// One more score (a MOS) of one link.
    pub fn add(&mut self, mos: f64) {
        self.worst = if self.count == 0 { mos } else { self.worst.min(mos) };
        self.sum += mos;
        self.count += 1;
    }

    /// The call's mean and worst, if it was scored at all (rounded to hundredths, which is more
    /// than the model can tell).
    pub fn summary(&self) -> Option<hark_protocol::CallQuality> {
        let round = |mos: f64| (mos * 100.0).round() / 100.0;
        (self.count > 0).then(|| hark_protocol::CallQuality { mos_average: round(self.sum / f64::from(self.count)), mos_worst: round(self.worst) })
    }
}

/// A shortfall under this share of the packets an interval usually brings is timing, not a gap.
const SHORTFALL_NOISE: f64 = 0.05;
/// How many intervals with packets a charged gap waits for the receiver's count to match it.
const CHARGE_LAPSES_AFTER: u32 = 2;

/// Loss per reporting interval, from a receiver's running counts of one constant-rate stream
/// (Opus never stops sending: silence is packets too).
///
/// A receiver counts a gap as lost only once the packet after it arrives, so while nothing
/// comes its count says nothing is lost, and when packets return the whole gap lands at once,
/// an interval or two late. The meter charges packets that neither came nor were counted
/// (against the rate it expects) as lost when they go missing, and does not count them a
/// second time when the receiver's count catches up.
///
/// The rate starts at the caller's guess and is learnt from whole intervals. Two intervals in a
/// row short while packets still come is no gap but a slower stream than guessed (a far side
/// sending 40 ms packets, say): the meter takes the new rate and drops its charge, at the cost
/// of one interval reported too lossy.
#[derive(Debug, Clone)]
pub struct LossMeter {
    received: u64,
    lost: i64,
    /// Packets an interval brings.
    expected: f64,
    /// Whether the first interval (a partial one: media starts within it) has gone by.
    started: bool,
    /// Packets charged as lost that the receiver's count has not matched yet.
    charged: f64,
    /// The last interval's shortfall that was too small to call a gap.
    unexplained: f64,
    /// Intervals with packets since the last charge.
    since_charge: u32,
    /// Whether the last interval was short while packets came.
    short_with_packets: bool,
}

impl LossMeter {
    /// A meter for a stream expected to bring `expected` packets an interval.
    pub fn new(expected: f64) -> LossMeter {
        LossMeter { received: 0, lost: 0, expected, started: false, charged: 0.0, unexplained: 0.0, since_charge: 0, short_with_packets: false }
    }

    /// The loss, percent, of the interval that ended with these running counts.
    pub fn interval(&mut self, received: u64, lost: i64) -> f64 {
        let (new_received, new_lost) = if received < self.received {
            // The stream started over (a new one): its counts are all new.
            (received as f64, lost.max(0) as f64)
        } else {
            ((received - self.received) as f64, (lost - self.lost).max(0) as f64)
        };
        (self.received, self.lost) = (received, lost);
        let percent = |lost: f64, total: f64| if total > 0.0 { 100.0 * lost / total } else { 0.0 };
        if !std::mem::replace(&mut self.started, true) {
            return percent(new_lost, new_received + new_lost);
        }

        let matched = new_lost.min(self.charged);
        self.charged -= matched;
        let new_lost = new_lost - matched;
        let accounted = new_received + new_lost;
        let shortfall = (self.expected - accounted).max(0.0);
        let short = shortfall > self.expected * SHORTFALL_NOISE;
        let slower_stream = short && new_received > 0.0 && self.short_with_packets && matched == 0.0;
        self.short_with_packets = short && new_received > 0.0;
        let missing = if slower_stream {
            (self.expected, self.charged, self.unexplained) = (accounted, 0.0, 0.0);
            0.0
        } else if short {
            // The gap began in the last interval's tail too: what that one lacked was no timing.
            let missing = shortfall + std::mem::take(&mut self.unexplained);
            self.charged += missing;
            self.since_charge = 0;
            missing
        } else {
            self.unexplained = shortfall;
            if self.charged > 0.0 {
                self.since_charge += 1;
                if self.since_charge >= CHARGE_LAPSES_AFTER {
                    // Never matched (the stream started over, or the gap was shorter than charged).
                    self.charged = 0.0;
                }
            } else if matched == 0.0 {
                // Gently both ways: a receiver's late count of a gap must not pass for a faster
                // stream.
                self.expected = if accounted > self.expected { accounted.min(1.1 * self.expected) } else { 0.8 * self.expected + 0.2 * accounted };
            }
            0.0
        };
        percent(new_lost + missing, accounted + missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r_for(one_way_delay_ms: f64, loss_percent: f64, codec: CodecImpairment) -> f64 {
        score(&Impairments { one_way_delay_ms, loss_percent, burst_ratio: 1.0, codec }).r
    }

    const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    const G729A_VAD: CodecImpairment = CodecImpairment { ie: 11.0, bpl: 19.0 };

    fn close(got: f64, want: f64, within: f64) -> bool {
        (got - want).abs() <= within
    }

    #[test]
    fn g107s_defaults_rate_93_2() {
        let best = score(&Impairments { one_way_delay_ms: 0.0, loss_percent: 0.0, burst_ratio: 1.0, codec: G711_PLC });
        assert!(close(best.r, 93.2062, 0.001), "{best:?}");
        assert!(close(best.mos, 4.409, 0.001), "{best:?}");
    }

    #[test]
    fn delay_costs_as_the_model_says() {
        // Independent implementations of G.107 (06/2015), with T = Ta and Tr = 2·Ta.
        for (ta, want) in [(50.0, 91.756), (100.0, 90.664), (150.0, 89.539), (200.0, 85.805), (300.0, 72.666), (400.0, 62.247)] {
            let got = r_for(ta, 0.0, G711_PLC);
            assert!(close(got, want, 0.01), "Ta {ta}: R {got}, want {want}");
        }
    }

    #[test]
    fn loss_costs_by_the_codecs_robustness() {
        // A lecture's worked example (G.729A with VAD, 2 % loss, 150 ms) and G.711 with
        // concealment on the same path; then G.711 with concealment at 1 % and 5 % alone.
        assert!(close(r_for(150.0, 2.0, G729A_VAD), 70.539, 0.01));
        assert!(close(r_for(150.0, 2.0, G711_PLC), 82.528, 0.01));
        assert!(close(r_for(0.0, 1.0, G711_PLC), 89.566, 0.01));
        assert!(close(r_for(0.0, 5.0, G711_PLC), 77.425, 0.01));
    }

    #[test]
    fn mos_follows_annex_b() {
        for (r, want) in [(-5.0, 1.0), (3.2, 1.0), (50.0, 2.575), (60.0, 3.1), (70.0, 3.597), (80.0, 4.024), (90.0, 4.339), (100.0, 4.5), (120.0, 4.5)] {
            assert!(close(mos(r), want, 0.001), "R {r}: MOS {}, want {want}", mos(r));
        }
    }

    #[test]
    fn the_score_falls_as_loss_grows() {
        let scores: Vec<f64> = [0.0, 1.0, 5.0, 10.0, 20.0, 40.0].iter().map(|loss| score(&Impairments::measured(*loss, 40.0, 3.0)).mos).collect();
        assert!(scores.windows(2).all(|w| w[1] < w[0]), "{scores:?}");
        let quiet = score(&Impairments::measured(0.0, 2.0, 1.0));
        assert!(quiet.mos > 4.3, "a clean loopback call is a good one: {quiet:?}");
        let measured = Impairments::measured(0.0, 100.0, 30.0);
        assert!(close(measured.one_way_delay_ms, 50.0 + 60.0 + 26.5, 1e-9), "half the round trip, twice the jitter, Opus's own delay");
        let calm = Impairments::measured(0.0, 2.0, 1.0);
        assert!(close(calm.one_way_delay_ms, 1.0 + MIN_PLAYOUT_MS + 26.5, 1e-9), "never less than a frame of playout");
    }

    /// Drives a meter expecting 100 packets an interval with each interval's (packets that came,
    /// packets the receiver counted lost), after a first partial interval of 40, and returns
    /// each interval's loss after that first.
    fn losses(intervals: &[(u64, i64)]) -> Vec<f64> {
        let mut meter = LossMeter::new(100.0);
        assert_eq!(meter.interval(40, 0), 0.0, "a first interval short of the guess is no gap");
        let (mut received, mut lost) = (40u64, 0i64);
        intervals
            .iter()
            .map(|&(came, counted)| {
                received += came;
                lost += counted;
                meter.interval(received, lost)
            })
            .collect()
    }

    #[test]
    fn a_steady_stream_loses_what_its_receiver_counts() {
        let got = losses(&[(100, 0), (98, 2), (90, 10), (101, 0), (99, 0)]);
        assert_eq!(got[..3], [0.0, 2.0, 10.0]);
        assert!(got[3..].iter().all(|&l| l == 0.0), "{got:?}");
    }

    #[test]
    fn a_gap_is_lost_while_it_lasts_and_counted_once() {
        // A cut from the last 30 % of the second interval to 40 % into the fifth (270 packets),
        // which the receiver counts an interval after packets return.
        let got = losses(&[(100, 0), (70, 0), (0, 0), (0, 0), (60, 0), (100, 270), (100, 0)]);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[1], 30.0, "the gap shows as it starts");
        assert_eq!(got[2..4], [100.0, 100.0], "nothing came: all lost");
        assert_eq!(got[4], 40.0);
        assert_eq!(got[5..], [0.0, 0.0], "the receiver's late count of the gap is not lost again: {got:?}");
    }

    #[test]
    fn a_gap_right_after_the_start_is_charged_at_the_guessed_rate() {
        let got = losses(&[(3, 0), (0, 0), (47, 0), (100, 250), (100, 0)]);
        assert_eq!(got, [97.0, 100.0, 53.0, 0.0, 0.0]);
    }

    #[test]
    fn a_gap_that_starts_late_in_an_interval_is_charged_when_it_shows() {
        // The cut starts 3 packets before an interval ends (too few to tell from timing), then
        // a whole interval is missing; the receiver counts 103 when packets return.
        let got = losses(&[(100, 0), (97, 0), (0, 0), (100, 103), (100, 0)]);
        assert_eq!(got[1], 0.0, "three short is timing");
        assert_eq!(got[2], 100.0);
        assert!(got[3] < 1.0 && got[4] == 0.0, "the late count is not lost again: {got:?}");
    }

    #[test]
    fn an_unmatched_charge_lapses_and_real_loss_counts_again() {
        // A gap whose count never comes (the stream started over), then real loss.
        let got = losses(&[(100, 0), (0, 0), (100, 0), (100, 0), (90, 10)]);
        assert_eq!(got[1], 100.0);
        assert_eq!(got[4], 10.0, "{got:?}");
    }

    #[test]
    fn a_short_cut_across_two_intervals_costs_one_misread_and_no_false_gaps() {
        // 30 packets lost at the end of one interval and 30 at the start of the next (read as a
        // slower stream), counted late: that count is loss, and no gap follows.
        let got = losses(&[(100, 0), (70, 0), (70, 0), (100, 60), (100, 0), (100, 0)]);
        assert_eq!(got[1], 30.0);
        assert_eq!(got[2], 0.0);
        assert_eq!(got[3], 37.5);
        assert_eq!(got[4..], [0.0, 0.0], "{got:?}");
    }

    #[test]
    fn a_slower_stream_than_guessed_is_learnt_not_called_lost() {
        // 40 ms packets: 50 an interval where 100 were guessed.
        let got = losses(&[(50, 0), (50, 0), (50, 0), (45, 5), (50, 0)]);
        assert_eq!(got[0], 50.0, "one interval misread");
        assert_eq!(got[1..], [0.0, 0.0, 10.0, 0.0], "{got:?}");
    }

    #[test]
    fn before_any_packet_nothing_is_counted_and_then_silence_is_all_lost() {
        let mut meter = LossMeter::new(100.0);
        assert_eq!(meter.interval(0, 0), 0.0);
        assert_eq!(meter.interval(0, 0), 100.0, "a whole interval with nothing is all lost");
    }

    #[test]
    fn a_call_keeps_the_mean_and_the_worst_of_its_scores() {
        let mut scores = CallScores::default();
        assert_eq!(scores.summary(), None, "a call never scored has nothing to keep");
        for mos in [4.4, 4.4, 1.13, 4.371] {
            scores.add(mos);
        }
        assert_eq!(scores.summary(), Some(hark_protocol::CallQuality { mos_average: 3.58, mos_worst: 1.13 }));
        assert!(scores.summary().unwrap().is_valid());
    }
}
