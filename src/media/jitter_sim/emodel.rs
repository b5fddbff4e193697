//! The ITU-T G.107 E-model (06/2015), reduced to what a jitter buffer changes: the delay it adds
//! and the frames that arrived but were not played. Everything else is held at the defaults:
//! Is = 0 and A = 0, so R = Ro − Is − Id − Ie,eff + A = 93.2 − Id − Ie,eff.
//!
//! - Id (§7.3, delay impairment) is Idd alone, from the absolute one-way delay
//!   Ta = [`BUDGET_MS`] of assumed network and codec delay + the buffer's mean delay:
//!   Idd = 0 for Ta ≤ 100 ms, else 25·{(1 + X⁶)^⅙ − 3·(1 + (X/3)⁶)^⅙ + 2}, X = log₂(Ta / 100).
//! - Ie,eff (§7.4) = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl), for G.711 with packet loss
//!   concealment (G.113 Appendix I: Ie = 0, Bpl = 25.1). Ppl is the percentage of arrived frames
//!   not played; BurstR = 1/(p + q) from the two-state Markov model of G.107 §7.4 (p: a played
//!   frame is followed by a lost one; q: a lost frame by a played one), 1 for random loss.

/// Network and codec delay assumed on top of the buffer's, in ms.
pub const BUDGET_MS: f64 = 150.0;
/// Basic signal-to-noise ratio Ro with every default (G.107 §7.1): 94.77 − 1.41 = 93.2 (rounded).
pub const R0: f64 = 93.2;
/// Equipment impairment of G.711 (G.113 Appendix I).
pub const IE_G711: f64 = 0.0;
/// Packet-loss robustness of G.711 with PLC (G.113 Appendix I).
pub const BPL_G711_PLC: f64 = 25.1;

/// Idd of G.107 §7.3 for an absolute one-way delay of `ta_ms`.
pub fn delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms.is_nan() || ta_ms <= 100.0 {
        return 0.0;
    }
    let x = (ta_ms / 100.0).log2();
    let sixth = 1.0 / 6.0;
    25.0 * ((1.0 + x.powi(6)).powf(sixth) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(sixth) + 2.0)
}

/// Ie,eff of G.107 §7.4 for G.711 with PLC, `ppl_pct` percent of frames lost with burst ratio
/// `burst_r`.
pub fn loss_impairment(ppl_pct: f64, burst_r: f64) -> f64 {
    if ppl_pct.is_nan() || ppl_pct <= 0.0 {
        return IE_G711;
    }
    let burst_r = if burst_r > 0.0 { burst_r } else { 1.0 };
    IE_G711 + (95.0 - IE_G711) * ppl_pct / (ppl_pct / burst_r + BPL_G711_PLC)
}

/// BurstR = 1/(p + q) of a loss pattern (`true`: lost), in stream order. 1 when nothing or
/// everything is lost, or when the pattern is too short to tell.
pub fn burst_ratio(lost: impl IntoIterator<Item = bool>) -> f64 {
    // Transitions counted by the state they leave: [played, lost] → [to lost, total].
    let (mut from_played, mut from_lost) = ((0u64, 0u64), (0u64, 0u64));
    let mut previous: Option<bool> = None;
    for now in lost {
        match previous {
            Some(false) => from_played = (from_played.0 + u64::from(now), from_played.1 + 1),
            Some(true) => from_lost = (from_lost.0 + u64::from(!now), from_lost.1 + 1),
            None => {}
        }
        previous = Some(now);
    }
    if from_played.1 == 0 || from_lost.1 == 0 {
        return 1.0;
    }
    let p = from_played.0 as f64 / from_played.1 as f64;
    let q = from_lost.0 as f64 / from_lost.1 as f64;
    if p + q > 0.0 { 1.0 / (p + q) } else { 1.0 }
}

/// The transmission rating R for a buffer adding `buffer_delay_ms` on average and losing
/// `ppl_pct` percent of arrived frames with burst ratio `burst_r`.
pub fn rating(buffer_delay_ms: f64, ppl_pct: f64, burst_r: f64) -> f64 {
    R0 - delay_impairment(BUDGET_MS + buffer_delay_ms) - loss_impairment(ppl_pct, burst_r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn delay_impairment_matches_hand_computed_values() {
        // Ta = 200: X = 1, 25·(2^⅙ − 3·(730/729)^⅙ + 2) = 25·(1.1224620 − 3.0006855 + 2).
        assert!(close(delay_impairment(200.0), 3.044414));
        // Ta = 400: X = 2, 25·(65^⅙ − 3·(1 + (2/3)⁶)^⅙ + 2).
        assert!(close(delay_impairment(400.0), 24.070089));
        assert!(close(delay_impairment(170.0), 0.772443));
        assert_eq!(delay_impairment(100.0), 0.0);
        assert_eq!(delay_impairment(20.0), 0.0);
    }

    #[test]
    fn loss_impairment_matches_hand_computed_values() {
        // 95·2/(2/1 + 25.1) and 95·2/(2/2 + 25.1).
        assert!(close(loss_impairment(2.0, 1.0), 7.011070));
        assert!(close(loss_impairment(2.0, 2.0), 7.279693));
        assert_eq!(loss_impairment(0.0, 1.0), 0.0);
    }

    #[test]
    fn burst_ratio_is_one_over_p_plus_q() {
        let pattern = [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0].map(|b| b == 1);
        // From played: 8 transitions, 2 to lost (p = 1/4); from lost: 5, 2 to played (q = 2/5).
        assert!(close(burst_ratio(pattern), 1.0 / (0.25 + 0.4)));
        // Alternating loss is random-like or better: p = 1, q = 1.
        assert!(close(burst_ratio([false, true, false, true, false]), 0.5));
        assert_eq!(burst_ratio([false; 5]), 1.0);
        assert_eq!(burst_ratio([]), 1.0);
    }

    #[test]
    fn rating_combines_delay_and_loss() {
        // Ta = 150 + 50 ms, 2 % random loss: 93.2 − 3.044414 − 7.011070.
        assert!(close(rating(50.0, 2.0, 1.0), 83.144516));
        assert!(close(rating(0.0, 0.0, 1.0), 93.2 - 0.163531));
    }
}
