//! Turning a job's reply events into the text generated so far.
//!
//! Deltas are not simply concatenated: an attempt that fails after streaming is followed
//! by a `restart` and its text must be dropped; a job redelivered after its worker died
//! is processed again from scratch (a higher `delivery`, `seq` and `attempt` counting
//! from 1 again); and core NATS may lose a delta, which only the `seq` numbers reveal.
//! Every consumer of `--stream`-style output needs the same rules, so they live here.

use llmq_schemas::{ErrorType, ReplyEvent};

/// The text of the current attempt, built from events.
#[derive(Debug, Clone, Default)]
pub struct StreamText {
    text: String,
    reasoning: String,
    /// The processing (delivery) the state belongs to (0 before any event).
    delivery: u32,
    /// Its exact id, once an event named it.
    processing: Option<uuid::Uuid>,
    /// Highest `seq` seen; seqs run over the whole job, across attempts.
    last_seq: u64,
    /// The attempt the text belongs to (0 before any event).
    attempt: u32,
    /// Deltas applied in the current attempt.
    deltas: u64,
    /// The lowest `seq` applied in the current attempt (0: none yet).
    first_applied: u64,
    /// The next delta starts a later attempt at an unknown seq: no gap check for it.
    baseline_pending: bool,
    /// Deltas of the current attempt known to be missing.
    missed: u64,
    restarts: u32,
}

/// What applying one event did.
///
/// A consumer that cannot take text back (a terminal, an HTTP stream) drives its output
/// from these alone: it passes on a delta only when it is `Appended` (or a `Gap`), and
/// treats `Restarted` after it passed anything on as the end of what it can show. The
/// raw events are not enough: a job processed again (its worker died, or its outcome
/// could not be stored) sends a whole new stream of deltas, which is never more text.
#[derive(Debug, Clone, PartialEq)]
pub enum TextUpdate<'e> {
    /// Nothing changed the text (`started`, a duplicate, a late delta of an attempt or
    /// processing already given up on): pass nothing on.
    Unchanged,
    /// The delta extends the current text: print or pass it on. The content may be empty
    /// (a delta carrying only tool-call or reasoning fragments).
    Appended(&'e str),
    /// The text so far was discarded because an attempt failed after streaming (or a
    /// later attempt's event showed that the restart event was lost). [`StreamText::text`]
    /// now holds the next attempt's text, if any arrived with this event.
    Restarted {
        failed_attempt: u32,
        reason: Option<ErrorType>,
        message: Option<&'e str>,
    },
    /// Deltas `expected..got` were lost in transit; `content` (possibly empty) was still
    /// appended. The final outcome holds the complete text.
    Gap {
        expected: u64,
        got: u64,
        content: &'e str,
    },
    /// The final outcome (or a dead-letter notice): nothing more follows.
    Finished,
}

impl StreamText {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply<'e>(&mut self, event: &'e ReplyEvent) -> TextUpdate<'e> {
        let origin = match event {
            ReplyEvent::Started(e) => Some((e.delivery, e.processing)),
            ReplyEvent::Delta(e) => Some((e.delivery, e.processing)),
            ReplyEvent::Restart(e) => Some((e.delivery, e.processing)),
            ReplyEvent::Final(_) | ReplyEvent::DeadLettered(_) => None,
        };
        let mut superseded = None;
        if let Some((delivery, processing)) = origin {
            if delivery < self.delivery {
                // From a processing that was given up on (its worker died).
                return TextUpdate::Unchanged;
            }
            if delivery > self.delivery {
                superseded = self.enter_delivery(delivery);
                self.processing = processing;
            } else if processing.is_some()
                && self.processing.is_some()
                && processing != self.processing
            {
                // Two processings under one delivery (a rolled-back delivery count): follow
                // the one heard from last, but the text may be a mix: mark it incomplete.
                superseded = self.enter_delivery(delivery);
                self.processing = processing;
                self.missed += 1;
            } else if self.processing.is_none() {
                self.processing = processing;
            }
        }
        let update = self.apply_in_delivery(event);
        match (superseded, update) {
            // The text was replaced: `text()` holds what there is, `missed()` any gap.
            (
                Some(failed_attempt),
                TextUpdate::Unchanged | TextUpdate::Appended(_) | TextUpdate::Gap { .. },
            ) => TextUpdate::Restarted {
                failed_attempt,
                reason: None,
                message: None,
            },
            (_, update) => update,
        }
    }

    /// A new processing of the job starts: everything so far is void. Returns the attempt
    /// whose output was discarded, if it had any.
    fn enter_delivery(&mut self, delivery: u32) -> Option<u32> {
        let discarded = (self.deltas > 0).then_some(self.attempt);
        if discarded.is_some() {
            self.clear();
        }
        self.delivery = delivery;
        self.last_seq = 0;
        self.attempt = 0;
        self.baseline_pending = false;
        discarded
    }

    fn apply_in_delivery<'e>(&mut self, event: &'e ReplyEvent) -> TextUpdate<'e> {
        match event {
            ReplyEvent::Started(started) => {
                let discarded = self.enter_attempt(started.attempt);
                if started.first_seq > 0 && started.attempt >= self.attempt {
                    // Where this attempt's deltas start: every later gap is a real one.
                    self.last_seq = self.last_seq.max(started.first_seq - 1);
                    self.baseline_pending = false;
                }
                match discarded {
                    Some(failed_attempt) => TextUpdate::Restarted {
                        failed_attempt,
                        reason: None,
                        message: None,
                    },
                    None => TextUpdate::Unchanged,
                }
            }
            ReplyEvent::Delta(delta) => {
                if delta.seq <= self.last_seq {
                    return TextUpdate::Unchanged;
                }
                let discarded = self.enter_attempt(delta.attempt);
                let expected = self.last_seq + 1;
                self.last_seq = delta.seq;
                if delta.attempt < self.attempt {
                    // A late delta of an attempt already given up on.
                    return TextUpdate::Unchanged;
                }
                let check_gap = !std::mem::take(&mut self.baseline_pending);
                self.deltas += 1;
                if self.first_applied == 0 {
                    self.first_applied = delta.seq;
                }
                let content = delta.content.as_deref().unwrap_or("");
                self.text.push_str(content);
                if let Some(reasoning) = &delta.reasoning {
                    self.reasoning.push_str(reasoning);
                }
                if let Some(failed_attempt) = discarded {
                    return TextUpdate::Restarted {
                        failed_attempt,
                        reason: None,
                        message: None,
                    };
                }
                if check_gap && delta.seq > expected {
                    self.missed += delta.seq - expected;
                    return TextUpdate::Gap {
                        expected,
                        got: delta.seq,
                        content,
                    };
                }
                TextUpdate::Appended(content)
            }
            ReplyEvent::Restart(restart) => {
                self.attempt = self.attempt.max(restart.attempt);
                self.clear();
                TextUpdate::Restarted {
                    failed_attempt: restart.attempt,
                    reason: Some(restart.reason),
                    message: Some(&restart.message),
                }
            }
            ReplyEvent::Final(outcome) => {
                self.check_final(outcome);
                TextUpdate::Finished
            }
            ReplyEvent::DeadLettered(_) => TextUpdate::Finished,
        }
    }

    /// Counts what the final outcome says was streamed and this text lacks.
    ///
    /// The outcome names the range of deltas (`first_seq..=last_seq`) that streamed its
    /// output: the text is complete only if it holds every one of them and nothing else,
    /// which the events received decide on their own, whichever of them were lost.
    fn check_final(&mut self, outcome: &llmq_schemas::Outcome) {
        let Some(last) = outcome.last_seq else {
            return;
        };
        let other_delivery = self.delivery != 0 && outcome.delivery != self.delivery;
        let other_processing = outcome.processing.is_some()
            && self.processing.is_some()
            && outcome.processing != self.processing;
        let Some(first) = outcome.first_seq else {
            // An older worker: only deltas lost at the end can be seen.
            if other_delivery || other_processing {
                self.missed += last.max(1);
            } else if last > self.last_seq {
                self.missed += last - self.last_seq;
            }
            return;
        };
        let expected = (last + 1).saturating_sub(first);
        let missing = if other_delivery || other_processing {
            // Text of another processing is never this outcome's text.
            expected.max(u64::from(self.deltas > 0))
        } else if self.deltas > 0 && self.first_applied < first {
            // The text is an earlier attempt's: the last attempt's deltas never arrived.
            expected.max(1)
        } else {
            expected.saturating_sub(self.deltas)
        };
        self.missed = self.missed.max(missing);
    }

    /// The current attempt's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The current attempt's reasoning text, for providers that stream it.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }

    /// Deltas of the current attempt known to be lost.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Whether no delta of the current attempt is known to be missing.
    pub fn is_complete(&self) -> bool {
        self.missed == 0
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Moves to `attempt` if it is later than the current one; returns the attempt whose
    /// output was discarded, if it had any.
    fn enter_attempt(&mut self, attempt: u32) -> Option<u32> {
        if attempt <= self.attempt {
            return None;
        }
        let discarded = (self.deltas > 0).then_some(self.attempt);
        if discarded.is_some() {
            self.clear();
        }
        self.attempt = attempt;
        // Attempt 1 starts at seq 1; a later one continues from wherever the last ended.
        self.baseline_pending = attempt > 1;
        discarded
    }

    fn clear(&mut self) {
        self.text.clear();
        self.reasoning.clear();
        self.deltas = 0;
        self.first_applied = 0;
        self.missed = 0;
        self.restarts += 1;
        self.baseline_pending = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::{Delta, Restart, Started};
    use uuid::Uuid;

    const JOB: Uuid = Uuid::nil();

    fn started(attempt: u32) -> ReplyEvent {
        ReplyEvent::Started(Started {
            v: 1,
            job_id: JOB,
            delivery: 1,
            processing: None,
            attempt,
            first_seq: 0,
            provider: "p".into(),
            upstream_model: "u".into(),
            model: "m".into(),
        })
    }

    fn delta(seq: u64, attempt: u32, text: &str) -> ReplyEvent {
        ReplyEvent::Delta(Delta {
            v: 1,
            job_id: JOB,
            delivery: 1,
            processing: None,
            seq,
            attempt,
            content: Some(text.into()),
            reasoning: None,
            tool_calls: None,
        })
    }

    fn restart(attempt: u32) -> ReplyEvent {
        ReplyEvent::Restart(Restart {
            v: 1,
            job_id: JOB,
            delivery: 1,
            processing: None,
            attempt,
            reason: ErrorType::Network,
            message: "stream cut".into(),
        })
    }

    #[test]
    fn appends_deltas_in_order() {
        let mut text = StreamText::new();
        assert_eq!(text.apply(&started(1)), TextUpdate::Unchanged);
        assert_eq!(text.apply(&delta(1, 1, "Hel")), TextUpdate::Appended("Hel"));
        assert_eq!(text.apply(&delta(2, 1, "lo")), TextUpdate::Appended("lo"));
        assert_eq!(text.text(), "Hello");
        assert!(text.is_complete());
    }

    #[test]
    fn a_delta_without_text_is_still_part_of_the_current_answer() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        let mut fragment = delta(1, 1, "");
        if let ReplyEvent::Delta(d) = &mut fragment {
            d.content = None;
        }
        // Tool-call fragments carry no text, but a consumer passes them on.
        assert_eq!(text.apply(&fragment), TextUpdate::Appended(""));
        assert_eq!(text.apply(&fragment), TextUpdate::Unchanged, "a duplicate");
    }

    #[test]
    fn a_second_processing_after_text_went_out_is_never_more_text() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "first"));
        // The job is processed again (its outcome was not stored): its first event, of
        // whatever kind, says the text so far is void; none of it is `Appended`.
        for first in [
            in_delivery(2, started(1)),
            in_delivery(2, delta(1, 1, "again")),
        ] {
            let mut copy = text.clone();
            let update = copy.apply(&first);
            assert!(matches!(update, TextUpdate::Restarted { .. }), "{update:?}");
        }
    }

    #[test]
    fn restart_discards_the_failed_attempt() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "wrong "));
        text.apply(&delta(2, 1, "answer"));
        assert!(matches!(
            text.apply(&restart(1)),
            TextUpdate::Restarted {
                failed_attempt: 1,
                reason: Some(ErrorType::Network),
                ..
            }
        ));
        assert_eq!(text.text(), "");
        text.apply(&started(2));
        assert_eq!(
            text.apply(&delta(3, 2, "right")),
            TextUpdate::Appended("right")
        );
        assert_eq!(text.text(), "right");
        assert_eq!(text.restarts(), 1);
        assert!(text.is_complete());
    }

    #[test]
    fn a_lost_restart_is_detected_from_the_next_attempt() {
        let mut text = StreamText::new();
        text.apply(&delta(1, 1, "stale"));
        assert!(matches!(
            text.apply(&started(2)),
            TextUpdate::Restarted {
                failed_attempt: 1,
                reason: None,
                ..
            }
        ));
        assert_eq!(text.text(), "");
        text.apply(&delta(2, 2, "fresh"));
        assert_eq!(text.text(), "fresh");

        // Started lost as well: the delta's attempt number tells.
        let mut text = StreamText::new();
        text.apply(&delta(1, 1, "stale"));
        assert!(matches!(
            text.apply(&delta(5, 2, "fresh")),
            TextUpdate::Restarted { .. }
        ));
        assert_eq!(text.text(), "fresh");
        assert!(text.is_complete(), "the gap 2..5 was the failed attempt's");
    }

    #[test]
    fn gaps_are_counted_and_duplicates_ignored() {
        let mut text = StreamText::new();
        text.apply(&delta(1, 1, "a"));
        assert_eq!(
            text.apply(&delta(4, 1, "d")),
            TextUpdate::Gap {
                expected: 2,
                got: 4,
                content: "d"
            }
        );
        assert_eq!(text.missed(), 2);
        assert!(!text.is_complete());
        assert_eq!(text.apply(&delta(3, 1, "late")), TextUpdate::Unchanged);
        assert_eq!(text.apply(&delta(4, 1, "dup")), TextUpdate::Unchanged);
        assert_eq!(text.text(), "ad");
        // A restart makes the old gaps irrelevant.
        text.apply(&restart(1));
        text.apply(&delta(5, 2, "x"));
        assert!(text.is_complete());
    }

    #[test]
    fn a_gap_at_the_very_start_is_seen() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        assert!(matches!(
            text.apply(&delta(3, 1, "c")),
            TextUpdate::Gap {
                expected: 1,
                got: 3,
                ..
            }
        ));
    }

    fn in_delivery(delivery: u32, event: ReplyEvent) -> ReplyEvent {
        match event {
            ReplyEvent::Started(mut e) => {
                e.delivery = delivery;
                ReplyEvent::Started(e)
            }
            ReplyEvent::Delta(mut e) => {
                e.delivery = delivery;
                ReplyEvent::Delta(e)
            }
            ReplyEvent::Restart(mut e) => {
                e.delivery = delivery;
                ReplyEvent::Restart(e)
            }
            other => other,
        }
    }

    #[test]
    fn a_redelivery_supersedes_the_dead_processing() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "Hel"));
        text.apply(&restart(1));
        text.apply(&started(2));
        text.apply(&delta(2, 2, "He"));
        // The worker died; another processes the job from scratch: seq and attempt restart.
        let redelivered = in_delivery(2, started(1));
        let update = text.apply(&redelivered);
        assert!(
            matches!(
                update,
                TextUpdate::Restarted {
                    failed_attempt: 2,
                    ..
                }
            ),
            "{update:?}"
        );
        assert_eq!(text.text(), "");
        assert_eq!(
            text.apply(&in_delivery(2, delta(1, 1, "Hello"))),
            TextUpdate::Appended("Hello")
        );
        assert_eq!(
            text.apply(&in_delivery(2, delta(2, 1, " you"))),
            TextUpdate::Appended(" you")
        );
        // A late delta of the dead processing changes nothing.
        assert_eq!(text.apply(&delta(3, 2, "llo")), TextUpdate::Unchanged);
        assert_eq!(text.text(), "Hello you");
        assert_eq!(text.missed(), 0);
    }

    #[test]
    fn a_redelivery_seen_first_by_its_delta_still_resets_and_checks_gaps() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "old"));
        let first = in_delivery(3, delta(2, 1, "b"));
        let update = text.apply(&first);
        assert!(
            matches!(
                update,
                TextUpdate::Restarted {
                    failed_attempt: 1,
                    ..
                }
            ),
            "{update:?}"
        );
        assert_eq!(text.text(), "b");
        assert_eq!(text.missed(), 1, "seq 1 of the new processing was lost");
    }

    fn final_with(delivery: u32, last_seq: Option<u64>) -> ReplyEvent {
        let outcome: llmq_schemas::Outcome = serde_json::from_value(serde_json::json!({
            "v": 1, "job_id": JOB, "status": "succeeded", "model": "m", "tenant": "t",
            "tier": "interactive", "worker_id": "w", "delivery": delivery, "last_seq": last_seq,
            "timings": {"total_ms": 1, "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z"}
        }))
        .unwrap();
        ReplyEvent::Final(Box::new(outcome))
    }

    #[test]
    fn the_final_outcome_reveals_deltas_that_never_arrived() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "a"));
        text.apply(&delta(2, 1, "b"));
        assert_eq!(text.apply(&final_with(1, Some(2))), TextUpdate::Finished);
        assert!(text.is_complete());

        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "a"));
        text.apply(&final_with(1, Some(5)));
        assert_eq!(text.missed(), 4, "the last four deltas were lost");

        // Every delta lost (a reconnect): nothing arrived, the outcome says 3 were sent.
        let mut text = StreamText::new();
        text.apply(&final_with(1, Some(3)));
        assert_eq!(text.missed(), 3);

        // Deltas from a processing that died, outcome from another.
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "a"));
        text.apply(&final_with(2, Some(1)));
        assert!(!text.is_complete());
    }

    fn from(processing: u128, event: ReplyEvent) -> ReplyEvent {
        let id = Some(Uuid::from_u128(processing));
        match event {
            ReplyEvent::Started(mut e) => {
                e.processing = id;
                ReplyEvent::Started(e)
            }
            ReplyEvent::Delta(mut e) => {
                e.processing = id;
                ReplyEvent::Delta(e)
            }
            other => other,
        }
    }

    #[test]
    fn two_processings_under_one_delivery_mark_the_text_incomplete() {
        let mut text = StreamText::new();
        text.apply(&from(1, started(1)));
        text.apply(&from(1, delta(1, 1, "a")));
        // A second processing of the same delivery interleaves.
        text.apply(&from(2, started(1)));
        text.apply(&from(2, delta(1, 1, "b")));
        assert_eq!(text.text(), "b");
        assert!(!text.is_complete());
        // The outcome came from the first: the text is not its text.
        let mut text = StreamText::new();
        text.apply(&from(2, started(1)));
        text.apply(&from(2, delta(1, 1, "b")));
        let mut outcome = final_with(1, Some(1));
        if let ReplyEvent::Final(o) = &mut outcome {
            o.processing = Some(Uuid::from_u128(1));
        }
        text.apply(&outcome);
        assert!(!text.is_complete());
    }

    #[test]
    fn a_lost_first_delta_of_a_later_attempt_is_a_gap() {
        let with_first_seq = |attempt: u32, first_seq: u64| match started(attempt) {
            ReplyEvent::Started(mut e) => {
                e.first_seq = first_seq;
                ReplyEvent::Started(e)
            }
            _ => unreachable!(),
        };
        let mut text = StreamText::new();
        text.apply(&with_first_seq(1, 1));
        // Attempt 1 failed before any output; attempt 2's first delta (seq 1) is lost.
        text.apply(&with_first_seq(2, 1));
        text.apply(&delta(2, 2, "b"));
        assert_eq!(text.missed(), 1);
        // Without first_seq (an older worker) the first delta of a later attempt sets the
        // baseline, as before.
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&started(2));
        text.apply(&delta(2, 2, "b"));
        assert_eq!(text.missed(), 0);
    }

    fn final_range(delivery: u32, first_seq: u64, last_seq: u64) -> ReplyEvent {
        let mut event = final_with(delivery, Some(last_seq));
        if let ReplyEvent::Final(outcome) = &mut event {
            outcome.first_seq = Some(first_seq);
        }
        event
    }

    #[test]
    fn a_later_attempt_whose_start_was_lost_is_incomplete() {
        // Seen in the chaos test while the broker restarted: attempt 1 started and failed
        // without output; attempt 2's `started` and deltas 1-6 were lost; deltas 7-12 and
        // the final arrived.
        let mut text = StreamText::new();
        text.apply(&started(1));
        for seq in 7..=12 {
            text.apply(&delta(seq, 2, "x"));
        }
        assert_eq!(text.apply(&final_range(1, 1, 12)), TextUpdate::Finished);
        assert_eq!(text.text(), "xxxxxx");
        assert!(!text.is_complete());
        assert_eq!(text.missed(), 6, "deltas 1-6 of attempt 2 never arrived");
    }

    #[test]
    fn the_final_range_confirms_a_complete_later_attempt() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "bad"));
        text.apply(&restart(1));
        // Attempt 2's `started` was lost, its deltas all arrived.
        text.apply(&delta(2, 2, "go"));
        text.apply(&delta(3, 2, "od"));
        text.apply(&final_range(1, 2, 3));
        assert_eq!(text.text(), "good");
        assert!(text.is_complete());

        // An answer streamed as no delta at all is complete with no text.
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&final_range(1, 1, 0));
        assert!(text.is_complete());
    }

    #[test]
    fn text_of_an_earlier_attempt_is_not_the_answer() {
        // Attempt 1 streamed; its restart, attempt 2's start and every delta of it were
        // lost. The count of deltas matches, but they are the wrong ones.
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "a"));
        text.apply(&delta(2, 1, "b"));
        text.apply(&final_range(1, 3, 4));
        assert!(!text.is_complete());
        assert_eq!(text.missed(), 2);
    }

    #[test]
    fn a_gap_inside_the_last_attempt_is_counted_once() {
        let mut text = StreamText::new();
        text.apply(&started(1));
        text.apply(&delta(1, 1, "a"));
        text.apply(&delta(3, 1, "c"));
        text.apply(&final_range(1, 1, 3));
        assert_eq!(text.missed(), 1);
    }
}
