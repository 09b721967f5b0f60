//! The clock exchange of the handshake: the listener sends NTP-style
//! pings, the connecting node answers, and the round with the least path
//! delay gives the offset between their wall clocks with an error bound.

use crate::kernel::clock::Clock;
use crate::verdict::ClockEstimate;

use super::handshake::{expect, handshake_error, send_step, unexpected};
use super::protocol::{CLOCK_ROUNDS, Control, Message, STEP_TIMEOUT};
use super::{Channel, PeerError};

/// The listener's side of the clock exchange.
pub(super) async fn measure_clock(ch: &mut Channel) -> Result<ClockEstimate, PeerError> {
    let mut rounds = Vec::with_capacity(CLOCK_ROUNDS as usize);
    for id in 0..CLOCK_ROUNDS {
        let t1 = Clock::now_wall_ns();
        send_step(ch, &Message::Control(Control::ClockPing { id, t1 })).await?;
        match expect(ch, "a clock pong", STEP_TIMEOUT).await? {
            Message::Control(Control::ClockPong {
                id: got, t2, t3, ..
            }) if got == id => rounds.push(Round {
                t1,
                t2,
                t3,
                t4: Clock::now_wall_ns(),
            }),
            other => return Err(unexpected(ch, &format!("clock pong {id}"), &other)),
        }
    }
    estimate(&rounds).ok_or_else(|| {
        handshake_error(
            ch,
            "no usable clock round (a wall clock stepped during the exchange?)",
        )
    })
}

/// The connecting side of the clock exchange: answers exactly
/// [`CLOCK_ROUNDS`] pings with its receive and send times.
pub(super) async fn answer_pings(ch: &mut Channel) -> Result<(), PeerError> {
    for _ in 0..CLOCK_ROUNDS {
        match expect(ch, "a clock ping", STEP_TIMEOUT).await? {
            Message::Control(Control::ClockPing { id, t1 }) => {
                let t2 = Clock::now_wall_ns();
                // t3 as late as possible: time spent here counts as ours,
                // not as path delay.
                let pong = Message::Control(Control::ClockPong {
                    id,
                    t1,
                    t2,
                    t3: Clock::now_wall_ns(),
                });
                send_step(ch, &pong).await?;
            }
            other => return Err(unexpected(ch, "a clock ping", &other)),
        }
    }
    Ok(())
}

/// One NTP-style round: t1 and t4 on the listener's clock, t2 and t3 on the
/// peer's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Round {
    t1: i64,
    t2: i64,
    t3: i64,
    t4: i64,
}

/// The offset from the round with the least path delay.
///
/// With θ the true offset (peer − local) and d₁, d₂ the one-way delays
/// there and back: t2 − t1 = θ + d₁ and t3 − t4 = θ − d₂, so the estimate
/// ((t2 − t1) + (t3 − t4)) / 2 = θ + (d₁ − d₂) / 2, and the round trip is
/// delay = (t4 − t1) − (t3 − t2) = d₁ + d₂. The estimate is exact when the
/// path is symmetric (d₁ = d₂), the usual NTP assumption; and since neither
/// one-way delay can be negative, |d₁ − d₂| ≤ d₁ + d₂, so delay / 2 bounds
/// the error however asymmetric the path, provided neither clock steps or
/// drifts noticeably within a round (a sub-millisecond span here).
pub(super) fn estimate(rounds: &[Round]) -> Option<ClockEstimate> {
    // In i128: the peer's clock may be anywhere (unset, or its timestamps
    // garbage), and differences of i64 timestamps need not fit in an i64.
    let (delay, offset) = rounds
        .iter()
        .filter_map(|r| {
            let [t1, t2, t3, t4] = [r.t1, r.t2, r.t3, r.t4].map(i128::from);
            let delay = (t4 - t1) - (t3 - t2);
            // A negative delay means a clock was stepped mid-round.
            (delay >= 0).then_some((delay, ((t2 - t1) + (t3 - t4)) / 2))
        })
        .min_by_key(|(delay, _)| *delay)?;
    Some(ClockEstimate {
        offset_ns: i64::try_from(offset).ok()?,
        // Rounded up, so that halving an odd delay stays a bound.
        error_ns: i64::try_from((delay + 1) / 2).ok()?,
        samples: rounds.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn estimate_bounds_the_offset_even_on_asymmetric_paths() {
        let theta = 1_234_567_890i64; // the peer is ahead by this much
        // (start on the local clock, one-way delay there, time at the peer, delay back)
        let round = |t1: i64, there: i64, held: i64, back: i64| Round {
            t1,
            t2: t1 + there + theta,
            t3: t1 + there + held + theta,
            t4: t1 + there + held + back,
        };
        let rounds = [
            round(0, 5 * MS, 10_000, MS),
            round(100 * MS, 300_000, 50_000, 100_000), // least delay: 400 µs
            round(200 * MS, 2 * MS, 0, 2 * MS),
        ];
        let est = estimate(&rounds).unwrap();
        assert_eq!(est.samples, 3);
        assert_eq!(est.error_ns, 200_000);
        assert_eq!(est.offset_ns, theta + 100_000);
        assert!((est.offset_ns - theta).abs() <= est.error_ns);

        for (there, back) in [(0, 7), (7, 0), (1, 1), (MS, 3), (3, MS)] {
            let est = estimate(&[round(0, there, 5, back)]).unwrap();
            assert!(
                (est.offset_ns - theta).abs() <= est.error_ns,
                "{there} {back}"
            );
        }

        // A clock stepped back mid-round: negative delay, unusable.
        let stepped = Round {
            t4: -MS,
            ..round(0, 10, 0, 10)
        };
        assert!(estimate(&[stepped]).is_none());

        // Nonsense from the peer is no estimate, and no overflow panic.
        let wild = Round {
            t1: i64::MIN,
            t2: i64::MAX,
            t3: i64::MAX,
            t4: i64::MAX,
        };
        assert!(estimate(&[wild]).is_none());
    }
}
