// Time for isoguard: instants, local calendar dates and IANA zones.
//
// Every window of a safety program is a calendar-day window in a zone ("day 1 is the
// collection date; the window closes at 23:59:59 on day 7"), so the engine works with
// LocalDate (a day number) for arithmetic and Instant (UTC milliseconds) for ordering.
// Zone wraps a Howard Hinnant date-tz zone (USE_OS_TZDB: the system's tzdata).
//
// Thread safety: LocalDate and Instant are values. A Zone is immutable and may be shared;
// a ZoneCursor caches the last offset period it saw and belongs to one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace date {
class time_zone;
}

namespace isoguard {

using Instant = std::chrono::sys_time<std::chrono::milliseconds>;

// A calendar date as days since 1970-01-01 (proleptic Gregorian).
class LocalDate {
 public:
  constexpr LocalDate() = default;
  constexpr explicit LocalDate(int32_t days_since_epoch) : days_(days_since_epoch) {}
  static LocalDate FromYmd(int year, unsigned month, unsigned day);

  constexpr int32_t days_since_epoch() const { return days_; }
  int year() const;
  unsigned month() const;
  unsigned day() const;

  constexpr LocalDate operator+(int32_t days) const { return LocalDate(days_ + days); }
  constexpr LocalDate operator-(int32_t days) const { return LocalDate(days_ - days); }
  constexpr int32_t operator-(LocalDate other) const { return days_ - other.days_; }
  constexpr auto operator<=>(const LocalDate&) const = default;

  // Adds calendar months, clamping to the month's end (12-31 + 2 months = 02-28).
  LocalDate AddMonths(int months) const;
  // Whole years from this date to `on` (an age when this is a birth date).
  int YearsUntil(LocalDate on) const;

  std::string ToString() const;  // YYYY-MM-DD

 private:
  int32_t days_ = 0;
};

// The limits of every date the record format accepts.
inline constexpr int kMinYear = 1900;
inline constexpr int kMaxYear = 2100;

// A parsed ISO 8601 time with its offset, e.g. 2026-09-10T08:30:00-04:00 or ...Z.
struct OffsetTime {
  Instant instant;
  LocalDate local_date;  // the date as written, in the time's own offset
  int32_t offset_minutes = 0;
};

// "YYYY-MM-DDTHH:MM[:SS[.fff]](Z|+HH:MM|-HH:MM)". A time without an offset is an error.
Result<OffsetTime> ParseOffsetTime(std::string_view text);
// "YYYY-MM-DD".
Result<LocalDate> ParseDate(std::string_view text);
// A date field that also takes a time with an offset (its local date, as written).
Result<LocalDate> ParseDateOrTime(std::string_view text);

// An IANA zone. Cheap to copy (a pointer into the process-wide tz database).
class Zone {
 public:
  // Error (kNotFound) when the name is not in the system's tz database.
  static Result<Zone> Locate(std::string_view name);

  // UTC. Default-constructed zones cost nothing: no look-up in the tz database.
  Zone() = default;

  const std::string& name() const;
  const date::time_zone* get() const;

 private:
  explicit Zone(const date::time_zone* tz) : tz_(tz) {}
  const date::time_zone* tz_ = nullptr;  // null: UTC
};

// Converts instants to local dates in one zone, caching the current offset period so that
// time-ordered conversions cost a comparison each. One per thread.
class ZoneCursor {
 public:
  explicit ZoneCursor(Zone zone) : zone_(zone) {}

  LocalDate LocalDateOf(Instant t);
  // The last instant of a local date: 23:59:59 local time.
  Instant EndOfDay(LocalDate d);
  // ISO 8601 with the zone's offset at that instant: 2026-09-16T23:59:59-04:00.
  std::string FormatInstant(Instant t);
  // The zone's abbreviation at that instant ("EDT", "CET", "BST").
  std::string Abbreviation(Instant t);

  const Zone& zone() const { return zone_; }

 private:
  void Refresh(Instant t);

  Zone zone_;
  Instant period_begin_ = Instant::max();
  Instant period_end_ = Instant::min();
  int64_t offset_ms_ = 0;
};

// Formats an instant in UTC (used where no zone applies).
std::string FormatUtc(Instant t);

}  // namespace isoguard
