#include "core/time.h"

#include <date/date.h>
#include <date/tz.h>

#include <cstdio>
#include <exception>

namespace isoguard {
namespace {

bool ReadDigits(std::string_view s, size_t pos, size_t count, int& out) {
  if (pos + count > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    char c = s[i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

// Parses "YYYY-MM-DD" at the start of `s`; checks the calendar and the format's year range.
Result<LocalDate> ParseDatePrefix(std::string_view s) {
  int y = 0, m = 0, d = 0;
  if (s.size() < 10 || !ReadDigits(s, 0, 4, y) || s[4] != '-' || !ReadDigits(s, 5, 2, m) ||
      s[7] != '-' || !ReadDigits(s, 8, 2, d)) {
    return Error::BadInput("'" + std::string(s.substr(0, 40)) + "' is not a date (YYYY-MM-DD)");
  }
  date::year_month_day ymd{date::year{y}, date::month{static_cast<unsigned>(m)},
                           date::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) {
    return Error::BadInput("'" + std::string(s.substr(0, 10)) + "' is not a calendar date");
  }
  if (y < kMinYear || y > kMaxYear) {
    return Error::BadInput("'" + std::string(s.substr(0, 10)) + "' is outside " +
                           std::to_string(kMinYear) + "-01-01.." + std::to_string(kMaxYear) +
                           "-12-31");
  }
  return LocalDate(static_cast<int32_t>(date::sys_days(ymd).time_since_epoch().count()));
}

std::string Quote(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

}  // namespace

LocalDate LocalDate::FromYmd(int year, unsigned month, unsigned day) {
  date::year_month_day ymd{date::year{year}, date::month{month}, date::day{day}};
  return LocalDate(static_cast<int32_t>(date::sys_days(ymd).time_since_epoch().count()));
}

namespace {
date::year_month_day Ymd(LocalDate d) {
  return date::year_month_day{date::sys_days{date::days{d.days_since_epoch()}}};
}
}  // namespace

int LocalDate::year() const { return static_cast<int>(Ymd(*this).year()); }
unsigned LocalDate::month() const { return static_cast<unsigned>(Ymd(*this).month()); }
unsigned LocalDate::day() const { return static_cast<unsigned>(Ymd(*this).day()); }

LocalDate LocalDate::AddMonths(int months) const {
  auto ymd = Ymd(*this);
  auto ym = date::year_month{ymd.year(), ymd.month()} + date::months{months};
  auto last = date::year_month_day_last{ym.year(), date::month_day_last{ym.month()}}.day();
  auto day = ymd.day() > last ? last : ymd.day();
  return LocalDate::FromYmd(static_cast<int>(ym.year()), static_cast<unsigned>(ym.month()),
                            static_cast<unsigned>(day));
}

int LocalDate::YearsUntil(LocalDate on) const {
  auto b = Ymd(*this);
  auto o = Ymd(on);
  int years = static_cast<int>(o.year()) - static_cast<int>(b.year());
  if (date::month_day{o.month(), o.day()} < date::month_day{b.month(), b.day()}) --years;
  return years;
}

namespace {
// Writes n as `width` zero-padded digits (hot in every JSON output; no printf).
char* PutDigits(char* p, int n, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + n % 10);
    n /= 10;
  }
  return p + width;
}
}  // namespace

std::string LocalDate::ToString() const {
  auto ymd = Ymd(*this);
  char buf[10];
  char* p = PutDigits(buf, static_cast<int>(ymd.year()), 4);
  *p++ = '-';
  p = PutDigits(p, static_cast<int>(static_cast<unsigned>(ymd.month())), 2);
  *p++ = '-';
  PutDigits(p, static_cast<int>(static_cast<unsigned>(ymd.day())), 2);
  return std::string(buf, sizeof buf);
}

Result<LocalDate> ParseDate(std::string_view text) {
  if (text.size() != 10) return Error::BadInput(Quote(text) + " is not a date (YYYY-MM-DD)");
  return ParseDatePrefix(text);
}

Result<OffsetTime> ParseOffsetTime(std::string_view s) {
  auto date = ParseDatePrefix(s);
  if (!date.ok()) return date.error();
  if (s.size() == 10) {
    return Error::BadInput(Quote(s) + " is a date; a time with an offset is required here");
  }
  int hh = 0, mi = 0, ss = 0;
  if ((s[10] != 'T' && s[10] != 't') || !ReadDigits(s, 11, 2, hh) || s.size() < 16 ||
      s[13] != ':' || !ReadDigits(s, 14, 2, mi)) {
    return Error::BadInput(Quote(s) + " is not an ISO 8601 time (YYYY-MM-DDTHH:MM:SS+HH:MM)");
  }
  size_t pos = 16;
  int64_t millis = 0;
  if (pos < s.size() && s[pos] == ':') {
    if (!ReadDigits(s, pos + 1, 2, ss)) {
      return Error::BadInput(Quote(s) + " has malformed seconds");
    }
    pos += 3;
    if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
      ++pos;
      int digits = 0;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (digits < 3) millis = millis * 10 + (s[pos] - '0');
        ++digits;
        ++pos;
      }
      if (digits == 0) return Error::BadInput(Quote(s) + " has an empty fraction of a second");
      for (int i = digits; i < 3; ++i) millis *= 10;
    }
  }
  if (hh > 23 || mi > 59 || ss > 59) {
    return Error::BadInput(Quote(s) + " has an hour, minute or second out of range");
  }
  if (pos >= s.size()) {
    return Error::BadInput(Quote(s) + " has no offset (add Z or +HH:MM)");
  }
  int offset_minutes = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh = 0, om = 0;
    bool ok = ReadDigits(s, pos + 1, 2, oh);
    size_t after = pos + 3;
    if (ok && after < s.size() && s[after] == ':') ++after;
    ok = ok && ReadDigits(s, after, 2, om);
    if (!ok || oh > 23 || om > 59) return Error::BadInput(Quote(s) + " has a malformed offset");
    offset_minutes = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos = after + 2;
  } else {
    return Error::BadInput(Quote(s) + " has no offset (add Z or +HH:MM)");
  }
  if (pos != s.size()) return Error::BadInput(Quote(s) + " has trailing characters");

  int64_t local_seconds =
      static_cast<int64_t>(date->days_since_epoch()) * 86400 + hh * 3600 + mi * 60 + ss;
  int64_t utc_ms = (local_seconds - offset_minutes * 60) * 1000 + millis;
  return OffsetTime{Instant(std::chrono::milliseconds(utc_ms)), *date, offset_minutes};
}

Result<LocalDate> ParseDateOrTime(std::string_view text) {
  if (text.size() == 10) return ParseDate(text);
  auto t = ParseOffsetTime(text);
  if (!t.ok()) return t.error();
  return t->local_date;
}

Result<Zone> Zone::Locate(std::string_view name) {
  try {
    return Zone(date::locate_zone(name));
  } catch (const std::exception&) {
    return Error::NotFound("unknown time zone '" + std::string(name.substr(0, 60)) + "'");
  }
}

const date::time_zone* Zone::get() const {
  static const date::time_zone* const utc = date::locate_zone("UTC");
  return tz_ != nullptr ? tz_ : utc;
}

const std::string& Zone::name() const { return get()->name(); }

namespace {

// The system's zone files list transitions only up to 2037 and leave later years to a rule
// string that date-tz does not read. Calendars repeat every 28 years between 1901 and 2099, so
// an instant from 2038 on is looked up 28 years earlier (same weekdays, same rule-based
// transitions) and the answer shifted back. Dates after 2100-02-28 are one weekday off; the
// record format ends at 2100-12-31 and program rules do not reach that far.
constexpr std::chrono::seconds kRuleCycle{int64_t{10227} * 86400};  // 28 years
constexpr std::chrono::sys_seconds kLastListedTransition{
    std::chrono::seconds{2145916800}};  // 2038-01-01Z

struct Period {
  std::chrono::sys_seconds begin, end;
  std::chrono::seconds offset;
  std::string abbrev;
};

// How far back (a whole number of 28-year cycles) an instant is looked up.
std::chrono::seconds ShiftFor(std::chrono::seconds since_epoch) {
  std::chrono::seconds shift{0};
  while (since_epoch - shift >= kLastListedTransition.time_since_epoch()) shift += kRuleCycle;
  return shift;
}

Period PeriodAt(const date::time_zone* tz, std::chrono::sys_seconds t) {
  auto shift = ShiftFor(t.time_since_epoch());
  auto info = tz->get_info(t - shift);
  Period p{info.begin, info.end, info.offset, info.abbrev};
  if (shift.count() != 0) {
    p.begin = info.begin + shift;
    p.end = info.end == std::chrono::sys_seconds::max() ? info.end : info.end + shift;
  }
  return p;
}

}  // namespace

void ZoneCursor::Refresh(Instant t) {
  Period p = PeriodAt(zone_.get(), std::chrono::time_point_cast<std::chrono::seconds>(t));
  period_begin_ = std::chrono::time_point_cast<std::chrono::milliseconds>(p.begin);
  period_end_ = p.end == std::chrono::sys_seconds::max()
                    ? Instant::max()
                    : std::chrono::time_point_cast<std::chrono::milliseconds>(p.end);
  offset_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(p.offset).count();
}

LocalDate ZoneCursor::LocalDateOf(Instant t) {
  if (t < period_begin_ || t >= period_end_) Refresh(t);
  int64_t local_ms = t.time_since_epoch().count() + offset_ms_;
  int64_t days = local_ms >= 0 ? local_ms / 86400000 : -((-local_ms + 86399999) / 86400000);
  return LocalDate(static_cast<int32_t>(days));
}

Instant ZoneCursor::EndOfDay(LocalDate d) {
  auto local = date::local_seconds{
      std::chrono::seconds(static_cast<int64_t>(d.days_since_epoch()) * 86400 + 86399)};
  // 23:59:59 is never inside a transition in the zones programs use; `latest` makes the choice
  // explicit should one ever be.
  auto shift = ShiftFor(local.time_since_epoch());
  auto sys = zone_.get()->to_sys(local - shift, date::choose::latest) + shift;
  return std::chrono::time_point_cast<std::chrono::milliseconds>(sys);
}

std::string ZoneCursor::FormatInstant(Instant t) {
  if (t < period_begin_ || t >= period_end_) Refresh(t);
  int64_t local_ms = t.time_since_epoch().count() + offset_ms_;
  int64_t local_s = local_ms >= 0 ? local_ms / 1000 : -((-local_ms + 999) / 1000);
  int64_t days = local_s >= 0 ? local_s / 86400 : -((-local_s + 86399) / 86400);
  int64_t secs = local_s - days * 86400;
  std::string out = LocalDate(static_cast<int32_t>(days)).ToString();
  int64_t off_min = offset_ms_ / 60000;
  char buf[32];
  std::snprintf(buf, sizeof buf, "T%02d:%02d:%02d%c%02d:%02d", static_cast<int>(secs / 3600),
                static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60),
                off_min < 0 ? '-' : '+', static_cast<int>((off_min < 0 ? -off_min : off_min) / 60),
                static_cast<int>((off_min < 0 ? -off_min : off_min) % 60));
  return out + buf;
}

std::string ZoneCursor::Abbreviation(Instant t) {
  return PeriodAt(zone_.get(), std::chrono::time_point_cast<std::chrono::seconds>(t)).abbrev;
}

std::string FormatUtc(Instant t) {
  int64_t ms = t.time_since_epoch().count();
  int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
  int64_t days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
  int64_t secs = s - days * 86400;
  char buf[32];
  std::snprintf(buf, sizeof buf, "T%02d:%02d:%02dZ", static_cast<int>(secs / 3600),
                static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60));
  return LocalDate(static_cast<int32_t>(days)).ToString() + buf;
}

}  // namespace isoguard
