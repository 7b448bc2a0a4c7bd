//! Calendar periods in UTC, and the counter keys that name them.
//!
//! A cost counts in the day and month of the moment it is counted (the job's end), so a
//! job that straddles midnight counts in the new day.

use std::time::Duration;

use llmq_schemas::{BudgetPeriod, Timestamp};
use time::{Date, Month, OffsetDateTime, Time};

/// The period keys of one moment: `d20261201` and `m202612`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    pub day: String,
    pub month: String,
}

impl Periods {
    pub fn at(at: Timestamp) -> Self {
        let utc = at.as_offset().to_offset(time::UtcOffset::UTC);
        let (year, month, day) = (utc.year(), u8::from(utc.month()), utc.day());
        Periods {
            day: format!("d{year:04}{month:02}{day:02}"),
            month: format!("m{year:04}{month:02}"),
        }
    }

    pub fn key(&self, period: BudgetPeriod) -> &str {
        match period {
            BudgetPeriod::Day => &self.day,
            BudgetPeriod::Month => &self.month,
        }
    }
}

/// How long until the period that `at` falls in ends (when a spent budget is new again).
pub fn period_end(at: Timestamp, period: BudgetPeriod) -> Duration {
    let utc = at.as_offset().to_offset(time::UtcOffset::UTC);
    let next = match period {
        BudgetPeriod::Day => utc.date().next_day(),
        BudgetPeriod::Month => first_of_next_month(utc.date()),
    };
    let Some(next) = next else {
        return Duration::ZERO;
    };
    let end = OffsetDateTime::new_utc(next, Time::MIDNIGHT);
    (end - utc).try_into().unwrap_or(Duration::ZERO)
}

fn first_of_next_month(date: Date) -> Option<Date> {
    let (year, month) = match date.month() {
        Month::December => (date.year() + 1, Month::January),
        month => (date.year(), month.next()),
    };
    Date::from_calendar_date(year, month, 1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ends_are_utc_calendar_periods() {
        let at = Timestamp::parse("2026-12-31T23:59:00+02:00").unwrap();
        let periods = Periods::at(at);
        assert_eq!(periods.day, "d20261231");
        assert_eq!(periods.month, "m202612");
        assert_eq!(
            period_end(at, BudgetPeriod::Day),
            Duration::from_secs(2 * 3600 + 60)
        );
        assert_eq!(
            period_end(at, BudgetPeriod::Month),
            Duration::from_secs(2 * 3600 + 60)
        );
        let mid = Timestamp::parse("2026-02-10T12:00:00Z").unwrap();
        assert_eq!(Periods::at(mid).month, "m202602");
        assert_eq!(
            period_end(mid, BudgetPeriod::Month),
            Duration::from_secs((18 * 24 + 12) * 3600)
        );
    }
}
