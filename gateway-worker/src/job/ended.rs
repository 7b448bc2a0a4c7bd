//! How one processing of a job ended: the one value every path through it returns, and
//! [`super::outcome::conclude`] turns into a stored outcome or a hand-back.
//!
//! Processing decides what happened; it stores nothing. A job refused before any call
//! (invalid, cancelled, expired, an unknown model, its budget spent, its limits waited out)
//! and one whose attempts ended both come back as [`Ended::Finished`]; a job that goes
//! back to the queue without an outcome (every deployment cooling down, the budget
//! unreadable, a shutdown's grace period over) as [`Ended::HandedBack`], with what its
//! calls cost, if anything, so that it is billed.

use std::time::Duration;

use llmq_schemas::{
    Attempt, BudgetPeriod, ChatCompletion, ErrorType, JobError, OutcomeStatus, Partial,
};

use super::admit::NotAdmitted;
use super::attempts::{AttemptsEnd, AttemptsReport, CallUsage};

/// How a processing ended.
#[derive(Debug)]
pub enum Ended {
    /// With an outcome, to be stored.
    Finished(Box<Finished>),
    /// Without one: the job goes back to the queue.
    HandedBack(HandedBack),
}

/// Everything a processing that reached an outcome produced.
#[derive(Debug)]
pub struct Finished {
    pub status: OutcomeStatus,
    pub response: Option<ChatCompletion>,
    pub error: Option<JobError>,
    pub partial: Option<Partial>,
    pub attempts: Vec<Attempt>,
    pub usage: Vec<CallUsage>,
    pub ttft: Option<Duration>,
    /// The periods whose budget the tenant's spend reached with these calls' cost.
    pub over_budget: Vec<BudgetPeriod>,
}

/// A processing that gives the job back to the queue without an outcome.
#[derive(Debug)]
pub struct HandedBack {
    /// When the job may be delivered again (`None`: at once).
    pub delay: Option<Duration>,
    /// The fixed label of the hand-back, for the metric.
    pub reason: &'static str,
}

impl Ended {
    /// An outcome reached without calling a provider.
    pub fn without_calls(status: OutcomeStatus, error: JobError) -> Ended {
        Ended::Finished(Box::new(Finished {
            status,
            response: None,
            error: Some(error),
            partial: None,
            attempts: Vec::new(),
            usage: Vec::new(),
            ttft: None,
            over_budget: Vec::new(),
        }))
    }

    /// Back to the queue before any call: nothing to bill.
    pub fn handed_back(delay: Option<Duration>, reason: &'static str) -> Ended {
        Ended::HandedBack(HandedBack { delay, reason })
    }

    /// A job its tenant's limits did not admit.
    pub fn not_admitted(not_admitted: NotAdmitted) -> Ended {
        match not_admitted {
            NotAdmitted::Cancelled => {
                Ended::without_calls(OutcomeStatus::Cancelled, cancelled_while_running())
            }
            NotAdmitted::Expired => Ended::without_calls(
                OutcomeStatus::Expired,
                JobError::new(
                    ErrorType::DeadlineExceeded,
                    "the job's deadline passed while it waited for its tenant's limits",
                ),
            ),
            NotAdmitted::RateLimited(error) => Ended::without_calls(OutcomeStatus::Failed, error),
        }
    }

    /// The attempts' end as the job's outcome. `over_budget`: what counting their cost
    /// found.
    pub fn after_calls(report: AttemptsReport, over_budget: Vec<BudgetPeriod>) -> Ended {
        let (status, response, error, partial) = match report.end {
            AttemptsEnd::Succeeded(completion) => (
                OutcomeStatus::Succeeded,
                Some(completion.response),
                None,
                None,
            ),
            AttemptsEnd::Failed { error, partial } => {
                (OutcomeStatus::Failed, None, Some(error), partial)
            }
            AttemptsEnd::Cancelled => (
                OutcomeStatus::Cancelled,
                None,
                Some(cancelled_while_running()),
                None,
            ),
            AttemptsEnd::Expired { error } => (OutcomeStatus::Expired, None, Some(error), None),
        };
        Ended::Finished(Box::new(Finished {
            status,
            response,
            error,
            partial,
            attempts: report.attempts,
            usage: report.usage,
            ttft: report.ttft,
            over_budget,
        }))
    }
}

fn cancelled_while_running() -> JobError {
    JobError::new(ErrorType::Cancelled, "cancelled while running")
}
