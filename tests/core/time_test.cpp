// Tests of core/time: parsing the record format's times and dates, calendar arithmetic, and
// local dates in the zones the programs use, across daylight-saving changes.
#include "core/time.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace isoguard {
namespace {

using std::chrono::milliseconds;

// The instant of a UTC wall-clock time.
Instant Utc(int y, unsigned mo, unsigned d, int h, int mi, int s, int ms = 0) {
  using namespace std::chrono;
  return Instant(sys_days{year{y} / month{mo} / day{d}}) + hours{h} + minutes{mi} + seconds{s} +
         milliseconds{ms};
}

LocalDate Ymd(int y, unsigned m, unsigned d) { return LocalDate::FromYmd(y, m, d); }

Zone ZoneNamed(std::string_view name) {
  auto zone = Zone::Locate(name);
  EXPECT_TRUE(zone.ok()) << name;
  return *zone;
}

// --- ParseOffsetTime ---------------------------------------------------------------------

TEST(ParseOffsetTimeTest, ParsesUtcWithZ) {
  auto t = ParseOffsetTime("2026-09-01T10:00:00Z");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->instant, Utc(2026, 9, 1, 10, 0, 0));
  EXPECT_EQ(t->offset_minutes, 0);
  EXPECT_EQ(t->local_date, Ymd(2026, 9, 1));
}

TEST(ParseOffsetTimeTest, ParsesNegativeOffset) {
  auto t = ParseOffsetTime("2026-09-01T10:00:00-04:00");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->instant, Utc(2026, 9, 1, 14, 0, 0));
  EXPECT_EQ(t->offset_minutes, -240);
}

TEST(ParseOffsetTimeTest, ParsesPositiveOffsetWithMinutes) {
  auto t = ParseOffsetTime("2026-09-01T10:00:00+05:30");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->instant, Utc(2026, 9, 1, 4, 30, 0));
  EXPECT_EQ(t->offset_minutes, 330);
}

TEST(ParseOffsetTimeTest, ParsesOffsetWithoutColon) {
  auto plus = ParseOffsetTime("2026-09-01T10:00:00+0200");
  ASSERT_TRUE(plus.ok()) << plus.error().ToString();
  EXPECT_EQ(plus->instant, Utc(2026, 9, 1, 8, 0, 0));
  EXPECT_EQ(plus->offset_minutes, 120);

  auto minus = ParseOffsetTime("2026-09-01T10:00:00-0430");
  ASSERT_TRUE(minus.ok()) << minus.error().ToString();
  EXPECT_EQ(minus->instant, Utc(2026, 9, 1, 14, 30, 0));
  EXPECT_EQ(minus->offset_minutes, -270);
}

// The sign belongs to the whole offset, not to its hours: -00:30 is half an hour west.
TEST(ParseOffsetTimeTest, NegativeOffsetUnderAnHour) {
  auto t = ParseOffsetTime("2026-09-01T10:00:00-00:30");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->offset_minutes, -30);
  EXPECT_EQ(t->instant, Utc(2026, 9, 1, 10, 30, 0));
}

TEST(ParseOffsetTimeTest, SecondsMayBeOmitted) {
  auto t = ParseOffsetTime("2026-09-01T10:15-04:00");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->instant, Utc(2026, 9, 1, 14, 15, 0));
}

TEST(ParseOffsetTimeTest, ParsesFractionsOfASecond) {
  auto half = ParseOffsetTime("2026-09-01T10:00:00.5Z");
  ASSERT_TRUE(half.ok()) << half.error().ToString();
  EXPECT_EQ(half->instant, Utc(2026, 9, 1, 10, 0, 0, 500));

  auto millis = ParseOffsetTime("2026-09-01T10:00:00.123-04:00");
  ASSERT_TRUE(millis.ok()) << millis.error().ToString();
  EXPECT_EQ(millis->instant, Utc(2026, 9, 1, 14, 0, 0, 123));

  // Digits past the millisecond are read and dropped.
  auto micros = ParseOffsetTime("2026-09-01T10:00:00.123999Z");
  ASSERT_TRUE(micros.ok()) << micros.error().ToString();
  EXPECT_EQ(micros->instant, Utc(2026, 9, 1, 10, 0, 0, 123));

  auto comma = ParseOffsetTime("2026-09-01T10:00:00,25Z");
  ASSERT_TRUE(comma.ok()) << comma.error().ToString();
  EXPECT_EQ(comma->instant, Utc(2026, 9, 1, 10, 0, 0, 250));
}

TEST(ParseOffsetTimeTest, RejectsAnEmptyFraction) {
  auto t = ParseOffsetTime("2026-09-01T10:00:00.Z");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
}

// The local date is the date as written, in the time's own offset, not the UTC date.
TEST(ParseOffsetTimeTest, LocalDateIsTheDateAsWritten) {
  auto late = ParseOffsetTime("2026-09-01T23:30:00-04:00");
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->local_date, Ymd(2026, 9, 1));
  EXPECT_EQ(late->instant, Utc(2026, 9, 2, 3, 30, 0));

  auto early = ParseOffsetTime("2026-09-02T00:30:00+02:00");
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->local_date, Ymd(2026, 9, 2));
  EXPECT_EQ(early->instant, Utc(2026, 9, 1, 22, 30, 0));
}

TEST(ParseOffsetTimeTest, RejectsATimeWithoutAnOffset) {
  for (const char* text : {"2026-09-01T10:00:00", "2026-09-01T10:00", "2026-09-01T10:00:00.5"}) {
    SCOPED_TRACE(text);
    auto t = ParseOffsetTime(text);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
    EXPECT_NE(t.error().message.find("offset"), std::string::npos) << t.error().message;
  }
}

TEST(ParseOffsetTimeTest, RejectsADateWhereATimeIsRequired) {
  auto t = ParseOffsetTime("2026-09-01");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
  EXPECT_NE(t.error().message.find("offset"), std::string::npos) << t.error().message;
}

TEST(ParseOffsetTimeTest, RejectsMalformedOffsets) {
  for (const char* text :
       {"2026-09-01T10:00:00+5:00", "2026-09-01T10:00:00+05",
        "2026-09-01T10:00:00+05:", "2026-09-01T10:00:00+05:3", "2026-09-01T10:00:00+24:00",
        "2026-09-01T10:00:00+05:60", "2026-09-01T10:00:00EST", "2026-09-01T10:00:00 Z"}) {
    SCOPED_TRACE(text);
    auto t = ParseOffsetTime(text);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
  }
}

TEST(ParseOffsetTimeTest, RejectsTrailingCharacters) {
  for (const char* text :
       {"2026-09-01T10:00:00Zjunk", "2026-09-01T10:00:00-04:00 ", "2026-09-01T10:00:00-04:00:00"}) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(ParseOffsetTime(text).ok());
  }
}

TEST(ParseOffsetTimeTest, RejectsTextThatIsNotATime) {
  for (const char* text : {"", "yesterday", "2026-09-01 10:00:00Z", "2026/09/01T10:00:00Z",
                           "2026-9-01T10:00:00Z", "2026-09-01T1:00:00Z", "2026-09-01T10:0:00Z",
                           "2026-09-01T10:00:6Z", " 2026-09-01T10:00:00Z", "2026-09-01T10Z"}) {
    SCOPED_TRACE(text);
    auto t = ParseOffsetTime(text);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
    EXPECT_FALSE(t.error().message.empty());
  }
}

TEST(ParseOffsetTimeTest, RejectsImpossibleCalendarDates) {
  for (const char* text : {"2026-13-01T10:00:00Z", "2026-00-01T10:00:00Z", "2026-01-32T10:00:00Z",
                           "2026-01-00T10:00:00Z", "2026-04-31T10:00:00Z", "2026-02-29T10:00:00Z",
                           "2100-02-29T10:00:00Z"}) {
    SCOPED_TRACE(text);
    auto t = ParseOffsetTime(text);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
  }
}

TEST(ParseOffsetTimeTest, AcceptsFebruary29InLeapYears) {
  EXPECT_TRUE(ParseOffsetTime("2024-02-29T10:00:00Z").ok());
  EXPECT_TRUE(ParseOffsetTime("2000-02-29T10:00:00Z").ok());
}

TEST(ParseOffsetTimeTest, RejectsOutOfRangeClockFields) {
  for (const char* text : {"2026-09-01T24:00:00Z", "2026-09-01T23:60:00Z", "2026-09-01T23:59:60Z",
                           "2026-09-01T99:00:00Z"}) {
    SCOPED_TRACE(text);
    auto t = ParseOffsetTime(text);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kBadInput);
  }
  EXPECT_TRUE(ParseOffsetTime("2026-09-01T23:59:59Z").ok());
  EXPECT_TRUE(ParseOffsetTime("2026-09-01T00:00:00Z").ok());
}

TEST(ParseOffsetTimeTest, YearsOutsideTheFormatsRangeAreRejected) {
  EXPECT_FALSE(ParseOffsetTime("1899-06-15T10:00:00Z").ok());
  EXPECT_FALSE(ParseOffsetTime("1899-12-31T23:59:59Z").ok());
  EXPECT_TRUE(ParseOffsetTime("1900-01-01T00:00:00Z").ok());
  EXPECT_TRUE(ParseOffsetTime("1900-06-15T10:00:00Z").ok());
  EXPECT_TRUE(ParseOffsetTime("2100-06-15T10:00:00Z").ok());
  EXPECT_TRUE(ParseOffsetTime("2100-12-31T23:59:59Z").ok());
  EXPECT_FALSE(ParseOffsetTime("2101-01-01T00:00:00Z").ok());
  EXPECT_FALSE(ParseOffsetTime("2101-06-15T10:00:00Z").ok());

  auto early = ParseOffsetTime("1899-12-31T23:59:59Z");
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().kind, ErrorKind::kBadInput);
  EXPECT_NE(early.error().message.find("1900-01-01"), std::string::npos) << early.error().message;
}

// The limits apply to the date as written: late on 2100-12-31 in New York is already 2101 in
// UTC, and is still accepted.
TEST(ParseOffsetTimeTest, YearLimitsApplyToTheDateAsWritten) {
  auto t = ParseOffsetTime("2100-12-31T23:00:00-05:00");
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->local_date, Ymd(2100, 12, 31));
  EXPECT_EQ(t->instant, Utc(2101, 1, 1, 4, 0, 0));
}

// --- ParseDate and ParseDateOrTime ----------------------------------------------------------

TEST(ParseDateTest, ParsesADate) {
  auto d = ParseDate("2026-09-14");
  ASSERT_TRUE(d.ok()) << d.error().ToString();
  EXPECT_EQ(*d, Ymd(2026, 9, 14));
  EXPECT_EQ(d->year(), 2026);
  EXPECT_EQ(d->month(), 9u);
  EXPECT_EQ(d->day(), 14u);
}

TEST(ParseDateTest, RejectsATime) {
  auto d = ParseDate("2026-09-14T10:00:00Z");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind, ErrorKind::kBadInput);
}

TEST(ParseDateTest, RejectsMalformedAndImpossibleDates) {
  for (const char* text : {"", "2026-9-14", "20260914", "2026/09/14", "14-09-2026", "2026-09-1x",
                           "2026-02-29", "2026-02-30", "2026-06-31", "2026-13-01", "2026-00-10",
                           "2026-01-00", "1900-02-29", "2026-09-14 "}) {
    SCOPED_TRACE(text);
    auto d = ParseDate(text);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().kind, ErrorKind::kBadInput);
  }
  EXPECT_TRUE(ParseDate("2024-02-29").ok());
}

TEST(ParseDateTest, AcceptsTheFormatsRangeOnly) {
  EXPECT_TRUE(ParseDate("1900-01-01").ok());
  EXPECT_TRUE(ParseDate("2100-12-31").ok());
  EXPECT_FALSE(ParseDate("1899-12-31").ok());
  EXPECT_FALSE(ParseDate("2101-01-01").ok());
  EXPECT_FALSE(ParseDate("0000-01-01").ok());
  EXPECT_FALSE(ParseDate("9999-12-31").ok());
}

TEST(ParseDateOrTimeTest, TakesADate) {
  auto d = ParseDateOrTime("2026-08-01");
  ASSERT_TRUE(d.ok()) << d.error().ToString();
  EXPECT_EQ(*d, Ymd(2026, 8, 1));
}

TEST(ParseDateOrTimeTest, TakesTheLocalDateOfATimeAsWritten) {
  auto evening = ParseDateOrTime("2026-08-01T23:30:00-04:00");  // 2026-08-02 in UTC
  ASSERT_TRUE(evening.ok()) << evening.error().ToString();
  EXPECT_EQ(*evening, Ymd(2026, 8, 1));

  auto morning = ParseDateOrTime("2026-08-02T01:00:00+09:00");  // 2026-08-01 in UTC
  ASSERT_TRUE(morning.ok()) << morning.error().ToString();
  EXPECT_EQ(*morning, Ymd(2026, 8, 2));
}

TEST(ParseDateOrTimeTest, RejectsATimeWithoutAnOffset) {
  auto d = ParseDateOrTime("2026-08-01T10:00:00");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind, ErrorKind::kBadInput);
  EXPECT_NE(d.error().message.find("offset"), std::string::npos) << d.error().message;
}

TEST(ParseDateOrTimeTest, RejectsBadDatesAndTheFormatsLimits) {
  for (const char* text : {"", "2026-02-29", "2026-08-01X", "1899-12-31", "2101-01-01",
                           "1899-12-31T12:00:00Z", "2101-01-01T00:00:00Z"}) {
    SCOPED_TRACE(text);
    auto d = ParseDateOrTime(text);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().kind, ErrorKind::kBadInput);
  }
  EXPECT_TRUE(ParseDateOrTime("1900-01-01").ok());
  EXPECT_TRUE(ParseDateOrTime("2100-12-31").ok());
}

// --- LocalDate ----------------------------------------------------------------------------

TEST(LocalDateTest, CountsDaysFromTheEpoch) {
  EXPECT_EQ(Ymd(1970, 1, 1).days_since_epoch(), 0);
  EXPECT_EQ(LocalDate(0).ToString(), "1970-01-01");
  EXPECT_EQ(Ymd(1970, 1, 2).days_since_epoch(), 1);
  EXPECT_EQ(Ymd(1969, 12, 31).days_since_epoch(), -1);
}

TEST(LocalDateTest, FormatsWithPadding) {
  EXPECT_EQ(Ymd(1900, 1, 5).ToString(), "1900-01-05");
  EXPECT_EQ(Ymd(2100, 12, 31).ToString(), "2100-12-31");
  EXPECT_EQ(Ymd(2026, 9, 14).ToString(), "2026-09-14");
}

TEST(LocalDateTest, AddsAndSubtractsDaysAcrossMonthsAndYears) {
  EXPECT_EQ(Ymd(2026, 12, 31) + 1, Ymd(2027, 1, 1));
  EXPECT_EQ(Ymd(2027, 1, 1) - 1, Ymd(2026, 12, 31));
  EXPECT_EQ(Ymd(2024, 2, 28) + 1, Ymd(2024, 2, 29));
  EXPECT_EQ(Ymd(2024, 3, 1) - 1, Ymd(2024, 2, 29));
  EXPECT_EQ(Ymd(2026, 3, 1) - 1, Ymd(2026, 2, 28));
  EXPECT_EQ(Ymd(2026, 9, 1) + 30, Ymd(2026, 10, 1));
  EXPECT_EQ(Ymd(2026, 9, 7) + 6, Ymd(2026, 9, 13));  // a 7-day window from day 1
}

TEST(LocalDateTest, DifferenceIsInDays) {
  EXPECT_EQ(Ymd(2027, 1, 1) - Ymd(2026, 1, 1), 365);
  EXPECT_EQ(Ymd(2025, 1, 1) - Ymd(2024, 1, 1), 366);
  EXPECT_EQ(Ymd(2026, 9, 20) - Ymd(2026, 9, 1), 19);
  EXPECT_EQ(Ymd(2026, 9, 1) - Ymd(2026, 9, 20), -19);
  EXPECT_EQ(Ymd(2100, 12, 31) - Ymd(1900, 1, 1), 73413);
}

TEST(LocalDateTest, Compares) {
  EXPECT_LT(Ymd(2026, 9, 1), Ymd(2026, 9, 2));
  EXPECT_LT(Ymd(1969, 12, 31), Ymd(1970, 1, 1));
  EXPECT_EQ(Ymd(2026, 9, 1), LocalDate(Ymd(2026, 9, 1).days_since_epoch()));
  EXPECT_GE(Ymd(2026, 9, 1), Ymd(2026, 9, 1));
}

TEST(LocalDateTest, ReadsBackYearMonthDay) {
  LocalDate d = Ymd(1955, 11, 5);
  EXPECT_EQ(d.year(), 1955);
  EXPECT_EQ(d.month(), 11u);
  EXPECT_EQ(d.day(), 5u);
}

// --- AddMonths ----------------------------------------------------------------------------

TEST(AddMonthsTest, ClampsToTheEndOfTheMonth) {
  EXPECT_EQ(Ymd(2026, 12, 31).AddMonths(2), Ymd(2027, 2, 28));  // the contract's example
  EXPECT_EQ(Ymd(2026, 1, 31).AddMonths(1), Ymd(2026, 2, 28));
  EXPECT_EQ(Ymd(2026, 3, 31).AddMonths(1), Ymd(2026, 4, 30));
  EXPECT_EQ(Ymd(2026, 8, 31).AddMonths(1), Ymd(2026, 9, 30));
}

TEST(AddMonthsTest, ClampsToFebruary29InLeapYears) {
  EXPECT_EQ(Ymd(2023, 12, 31).AddMonths(2), Ymd(2024, 2, 29));
  EXPECT_EQ(Ymd(2024, 1, 30).AddMonths(1), Ymd(2024, 2, 29));
  EXPECT_EQ(Ymd(2099, 12, 31).AddMonths(2), Ymd(2100, 2, 28));  // 2100 is not a leap year
  EXPECT_EQ(Ymd(1999, 12, 31).AddMonths(2), Ymd(2000, 2, 29));  // 2000 is
}

TEST(AddMonthsTest, KeepsTheDayWhenItExists) {
  EXPECT_EQ(Ymd(2026, 5, 15).AddMonths(1), Ymd(2026, 6, 15));
  EXPECT_EQ(Ymd(2026, 11, 30).AddMonths(2), Ymd(2027, 1, 30));
  EXPECT_EQ(Ymd(2026, 9, 14).AddMonths(0), Ymd(2026, 9, 14));
  EXPECT_EQ(Ymd(2026, 9, 14).AddMonths(24), Ymd(2028, 9, 14));
}

TEST(AddMonthsTest, FromFebruary29) {
  EXPECT_EQ(Ymd(2024, 2, 29).AddMonths(12), Ymd(2025, 2, 28));
  EXPECT_EQ(Ymd(2024, 2, 29).AddMonths(48), Ymd(2028, 2, 29));
  EXPECT_EQ(Ymd(2024, 2, 29).AddMonths(1), Ymd(2024, 3, 29));
}

TEST(AddMonthsTest, SubtractsMonths) {
  EXPECT_EQ(Ymd(2026, 3, 31).AddMonths(-1), Ymd(2026, 2, 28));
  EXPECT_EQ(Ymd(2024, 3, 31).AddMonths(-1), Ymd(2024, 2, 29));
  EXPECT_EQ(Ymd(2026, 1, 15).AddMonths(-2), Ymd(2025, 11, 15));
  EXPECT_EQ(Ymd(2026, 9, 14).AddMonths(-12), Ymd(2025, 9, 14));
}

// --- YearsUntil ---------------------------------------------------------------------------

TEST(YearsUntilTest, CountsWholeYearsOnTheBirthday) {
  LocalDate birth = Ymd(2007, 5, 14);
  EXPECT_EQ(birth.YearsUntil(Ymd(2025, 5, 13)), 17);
  EXPECT_EQ(birth.YearsUntil(Ymd(2025, 5, 14)), 18);
  EXPECT_EQ(birth.YearsUntil(Ymd(2025, 5, 15)), 18);
  EXPECT_EQ(birth.YearsUntil(Ymd(2026, 1, 1)), 18);
  EXPECT_EQ(birth.YearsUntil(birth), 0);
}

TEST(YearsUntilTest, AroundTheYearsEnd) {
  LocalDate birth = Ymd(2000, 12, 31);
  EXPECT_EQ(birth.YearsUntil(Ymd(2001, 12, 30)), 0);
  EXPECT_EQ(birth.YearsUntil(Ymd(2001, 12, 31)), 1);
  EXPECT_EQ(birth.YearsUntil(Ymd(2002, 1, 1)), 1);
}

// Someone born on February 29 has a birthday on March 1 in common years (no February 29 to
// reach), and on February 29 in leap years.
TEST(YearsUntilTest, BornOnFebruary29) {
  LocalDate birth = Ymd(2008, 2, 29);
  EXPECT_EQ(birth.YearsUntil(Ymd(2026, 2, 28)), 17);
  EXPECT_EQ(birth.YearsUntil(Ymd(2026, 3, 1)), 18);
  EXPECT_EQ(birth.YearsUntil(Ymd(2028, 2, 28)), 19);
  EXPECT_EQ(birth.YearsUntil(Ymd(2028, 2, 29)), 20);
  EXPECT_EQ(birth.YearsUntil(Ymd(2020, 2, 28)), 11);  // under 12
  EXPECT_EQ(birth.YearsUntil(Ymd(2020, 2, 29)), 12);
}

// --- Zone ---------------------------------------------------------------------------------

TEST(ZoneTest, LocatesTheProgramsZones) {
  for (const char* name : {"America/New_York", "Europe/London", "Europe/Brussels", "UTC"}) {
    SCOPED_TRACE(name);
    auto zone = Zone::Locate(name);
    ASSERT_TRUE(zone.ok()) << zone.error().ToString();
    EXPECT_EQ(zone->name(), name);
    EXPECT_NE(zone->get(), nullptr);
  }
}

TEST(ZoneTest, UnknownNameIsAnError) {
  for (const char* name : {"Mars/Olympus_Mons", "", "New York", "EST5EDT/Nowhere"}) {
    SCOPED_TRACE(name);
    auto zone = Zone::Locate(name);
    ASSERT_FALSE(zone.ok());
    EXPECT_EQ(zone.error().kind, ErrorKind::kNotFound);
    EXPECT_NE(zone.error().message.find("time zone"), std::string::npos) << zone.error().message;
  }
  auto mars = Zone::Locate("Mars/Olympus_Mons");
  ASSERT_FALSE(mars.ok());
  EXPECT_NE(mars.error().message.find("Mars/Olympus_Mons"), std::string::npos);
}

// --- ZoneCursor: New York -----------------------------------------------------------------

TEST(ZoneCursorTest, NewYorkLocalDateInSummerAndWinter) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 9, 2, 3, 59, 59)), Ymd(2026, 9, 1));    // 23:59:59 EDT
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 9, 2, 4, 0, 0)), Ymd(2026, 9, 2));      // 00:00 EDT
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 12, 2, 4, 59, 59)), Ymd(2026, 12, 1));  // 23:59:59 EST
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 12, 2, 5, 0, 0)), Ymd(2026, 12, 2));    // 00:00 EST
}

TEST(ZoneCursorTest, NewYorkLocalDateAcrossTheFallBack) {
  // Daylight saving ends on 2026-11-01 at 02:00 EDT (06:00 UTC).
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 11, 1, 3, 59, 59)), Ymd(2026, 10, 31));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 11, 1, 4, 0, 0)), Ymd(2026, 11, 1));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 11, 2, 4, 59, 59)), Ymd(2026, 11, 1));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 11, 2, 5, 0, 0)), Ymd(2026, 11, 2));
}

TEST(ZoneCursorTest, NewYorkLocalDateAcrossTheSpringForward) {
  // Daylight saving starts on 2026-03-08 at 02:00 EST (07:00 UTC).
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 3, 8, 4, 59, 59)), Ymd(2026, 3, 7));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 3, 8, 5, 0, 0)), Ymd(2026, 3, 8));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 3, 9, 3, 59, 59)), Ymd(2026, 3, 8));
  EXPECT_EQ(ny.LocalDateOf(Utc(2026, 3, 9, 4, 0, 0)), Ymd(2026, 3, 9));
}

TEST(ZoneCursorTest, NewYorkEndOfDayInWinterTime) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  Instant end = ny.EndOfDay(Ymd(2026, 11, 4));
  EXPECT_EQ(end, Utc(2026, 11, 5, 4, 59, 59));
  EXPECT_EQ(ny.FormatInstant(end), "2026-11-04T23:59:59-05:00");
  EXPECT_EQ(ny.LocalDateOf(end), Ymd(2026, 11, 4));
  EXPECT_EQ(ny.LocalDateOf(end + milliseconds(1000)), Ymd(2026, 11, 5));
}

TEST(ZoneCursorTest, NewYorkEndOfDayInSummerTime) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  Instant end = ny.EndOfDay(Ymd(2026, 9, 16));
  EXPECT_EQ(end, Utc(2026, 9, 17, 3, 59, 59));
  EXPECT_EQ(ny.FormatInstant(end), "2026-09-16T23:59:59-04:00");
}

TEST(ZoneCursorTest, NewYorkEndOfDayOnTheChangeDays) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.EndOfDay(Ymd(2026, 3, 7)), Utc(2026, 3, 8, 4, 59, 59));
  EXPECT_EQ(ny.EndOfDay(Ymd(2026, 3, 8)), Utc(2026, 3, 9, 3, 59, 59));  // a 23-hour day
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2026, 3, 8))), "2026-03-08T23:59:59-04:00");
  EXPECT_EQ(ny.EndOfDay(Ymd(2026, 10, 31)), Utc(2026, 11, 1, 3, 59, 59));
  EXPECT_EQ(ny.EndOfDay(Ymd(2026, 11, 1)), Utc(2026, 11, 2, 4, 59, 59));  // a 25-hour day
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2026, 11, 1))), "2026-11-01T23:59:59-05:00");
}

// 01:30 happens twice on 2026-11-01 in New York; the offset tells them apart.
TEST(ZoneCursorTest, NewYorkFormatsTheRepeatedHour) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.FormatInstant(Utc(2026, 11, 1, 5, 30, 0)), "2026-11-01T01:30:00-04:00");
  EXPECT_EQ(ny.FormatInstant(Utc(2026, 11, 1, 6, 30, 0)), "2026-11-01T01:30:00-05:00");
  EXPECT_EQ(ny.Abbreviation(Utc(2026, 11, 1, 5, 30, 0)), "EDT");
  EXPECT_EQ(ny.Abbreviation(Utc(2026, 11, 1, 6, 30, 0)), "EST");
}

// --- ZoneCursor: London and Brussels ------------------------------------------------------

TEST(ZoneCursorTest, LondonAcrossBothChanges) {
  // British Summer Time: 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC.
  ZoneCursor london(ZoneNamed("Europe/London"));
  EXPECT_EQ(london.EndOfDay(Ymd(2026, 3, 28)), Utc(2026, 3, 28, 23, 59, 59));
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(2026, 3, 28))), "2026-03-28T23:59:59+00:00");
  EXPECT_EQ(london.EndOfDay(Ymd(2026, 3, 29)), Utc(2026, 3, 29, 22, 59, 59));
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(2026, 3, 29))), "2026-03-29T23:59:59+01:00");
  EXPECT_EQ(london.EndOfDay(Ymd(2026, 10, 25)), Utc(2026, 10, 25, 23, 59, 59));
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(2026, 10, 25))), "2026-10-25T23:59:59+00:00");

  EXPECT_EQ(london.LocalDateOf(Utc(2026, 6, 30, 23, 30, 0)), Ymd(2026, 7, 1));  // 00:30 BST
  EXPECT_EQ(london.LocalDateOf(Utc(2026, 12, 31, 23, 30, 0)), Ymd(2026, 12, 31));
  EXPECT_EQ(london.Abbreviation(Utc(2026, 7, 1, 12, 0, 0)), "BST");
  EXPECT_EQ(london.Abbreviation(Utc(2026, 12, 1, 12, 0, 0)), "GMT");
}

TEST(ZoneCursorTest, BrusselsAcrossBothChanges) {
  // Central European Summer Time: 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC.
  ZoneCursor brussels(ZoneNamed("Europe/Brussels"));
  EXPECT_EQ(brussels.EndOfDay(Ymd(2026, 3, 28)), Utc(2026, 3, 28, 22, 59, 59));
  EXPECT_EQ(brussels.EndOfDay(Ymd(2026, 3, 29)), Utc(2026, 3, 29, 21, 59, 59));
  EXPECT_EQ(brussels.FormatInstant(brussels.EndOfDay(Ymd(2026, 3, 29))),
            "2026-03-29T23:59:59+02:00");
  EXPECT_EQ(brussels.EndOfDay(Ymd(2026, 10, 25)), Utc(2026, 10, 25, 22, 59, 59));
  EXPECT_EQ(brussels.FormatInstant(brussels.EndOfDay(Ymd(2026, 10, 25))),
            "2026-10-25T23:59:59+01:00");

  EXPECT_EQ(brussels.LocalDateOf(Utc(2026, 12, 31, 23, 30, 0)), Ymd(2027, 1, 1));
  EXPECT_EQ(brussels.LocalDateOf(Utc(2026, 9, 13, 22, 0, 0)), Ymd(2026, 9, 14));
  EXPECT_EQ(brussels.LocalDateOf(Utc(2026, 9, 13, 21, 59, 59)), Ymd(2026, 9, 13));
  EXPECT_EQ(brussels.Abbreviation(Utc(2026, 7, 1, 12, 0, 0)), "CEST");
  EXPECT_EQ(brussels.Abbreviation(Utc(2026, 12, 1, 12, 0, 0)), "CET");
}

TEST(ZoneCursorTest, FormatsOffsetsWithMinutes) {
  ZoneCursor st_johns(ZoneNamed("America/St_Johns"));
  EXPECT_EQ(st_johns.FormatInstant(Utc(2026, 7, 1, 12, 0, 0)), "2026-07-01T09:30:00-02:30");
  EXPECT_EQ(st_johns.FormatInstant(Utc(2026, 12, 1, 12, 0, 0)), "2026-12-01T08:30:00-03:30");
  ZoneCursor kolkata(ZoneNamed("Asia/Kolkata"));
  EXPECT_EQ(kolkata.FormatInstant(Utc(2026, 7, 1, 20, 0, 0)), "2026-07-02T01:30:00+05:30");
  EXPECT_EQ(kolkata.LocalDateOf(Utc(2026, 7, 1, 20, 0, 0)), Ymd(2026, 7, 2));
}

// The cursor caches one offset period; conversions in any order must agree with a fresh cursor.
TEST(ZoneCursorTest, CachedConversionsAgreeWithFreshOnes) {
  for (const char* name : {"America/New_York", "Europe/London", "Europe/Brussels"}) {
    SCOPED_TRACE(name);
    Zone zone = ZoneNamed(name);
    ZoneCursor cursor(zone);
    std::vector<Instant> instants;
    for (Instant t = Utc(2025, 12, 1, 0, 0, 0); t < Utc(2027, 2, 1, 0, 0, 0);
         t += std::chrono::minutes(7919)) {
      instants.push_back(t);
    }
    // Forward, then backward, then alternating between far-apart instants.
    std::vector<Instant> order(instants.begin(), instants.end());
    order.insert(order.end(), instants.rbegin(), instants.rend());
    for (size_t i = 0; i < instants.size() / 2; ++i) {
      order.push_back(instants[i]);
      order.push_back(instants[instants.size() - 1 - i]);
    }
    for (Instant t : order) {
      ZoneCursor fresh(zone);
      ASSERT_EQ(cursor.LocalDateOf(t), fresh.LocalDateOf(t));
      ZoneCursor fresh_format(zone);
      ASSERT_EQ(cursor.FormatInstant(t), fresh_format.FormatInstant(t));
    }
  }
}

// Records may carry dates up to 2100. Daylight saving goes on after 2037 (the last transition
// listed in "fat" tzdata files); the zone's rule, not the last listed offset, must apply.
TEST(ZoneCursorTest, DaylightSavingContinuesAfter2037) {
  ZoneCursor ny(ZoneNamed("America/New_York"));
  EXPECT_EQ(ny.EndOfDay(Ymd(2040, 7, 1)), Utc(2040, 7, 2, 3, 59, 59));
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2040, 7, 1))), "2040-07-01T23:59:59-04:00");
  EXPECT_EQ(ny.LocalDateOf(Utc(2040, 7, 2, 3, 30, 0)), Ymd(2040, 7, 1));  // 23:30 EDT
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2040, 12, 1))), "2040-12-01T23:59:59-05:00");

  // More than one 28-year calendar cycle past 2037, up to the format's last year.
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2066, 7, 1))), "2066-07-01T23:59:59-04:00");
  EXPECT_EQ(ny.FormatInstant(ny.EndOfDay(Ymd(2100, 7, 1))), "2100-07-01T23:59:59-04:00");
  EXPECT_EQ(ny.LocalDateOf(Utc(2100, 7, 2, 3, 30, 0)), Ymd(2100, 7, 1));

  ZoneCursor london(ZoneNamed("Europe/London"));
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(2050, 7, 1))), "2050-07-01T23:59:59+01:00");
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(2099, 7, 1))), "2099-07-01T23:59:59+01:00");
  EXPECT_EQ(london.Abbreviation(Utc(2099, 7, 1, 12, 0, 0)), "BST");
}

// Before 1970 an instant's milliseconds must not round the second towards the epoch.
TEST(ZoneCursorTest, FormatsInstantsWithMillisecondsBeforeTheEpoch) {
  ZoneCursor utc(ZoneNamed("UTC"));
  Instant t = Utc(1969, 12, 31, 23, 59, 59, 500);
  EXPECT_EQ(utc.LocalDateOf(t), Ymd(1969, 12, 31));
  EXPECT_EQ(utc.FormatInstant(t), "1969-12-31T23:59:59+00:00");
  EXPECT_EQ(FormatUtc(t), "1969-12-31T23:59:59Z");
  EXPECT_EQ(FormatUtc(Utc(1950, 6, 1, 12, 0, 0, 250)), "1950-06-01T12:00:00Z");
}

TEST(ZoneCursorTest, FormatsBeforeTheEpoch) {
  ZoneCursor london(ZoneNamed("Europe/London"));
  EXPECT_EQ(london.FormatInstant(london.EndOfDay(Ymd(1955, 1, 10))), "1955-01-10T23:59:59+00:00");
  EXPECT_EQ(london.LocalDateOf(Utc(1955, 1, 10, 23, 59, 59)), Ymd(1955, 1, 10));
}

TEST(FormatUtcTest, FormatsInUtc) {
  EXPECT_EQ(FormatUtc(Utc(2026, 9, 1, 10, 0, 0)), "2026-09-01T10:00:00Z");
  EXPECT_EQ(FormatUtc(Utc(2026, 11, 5, 4, 59, 59)), "2026-11-05T04:59:59Z");
  EXPECT_EQ(FormatUtc(Utc(1970, 1, 1, 0, 0, 0)), "1970-01-01T00:00:00Z");
}

}  // namespace
}  // namespace isoguard
