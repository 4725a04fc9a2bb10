// Tests of core/text: the matching form of medication names, whole-word matching, ATC codes,
// and the number formatting and rounding the engine's output relies on.
#include "core/text.h"

#include <gtest/gtest.h>

#include <string>

namespace isoguard {
namespace {

// --- NormalizeMedicationName --------------------------------------------------------------

TEST(NormalizeMedicationNameTest, LowerCasesDropsApostrophesAndJoinsPunctuation) {
  EXPECT_EQ(NormalizeMedicationName("St. John's Wort"), "st johns wort");
  EXPECT_EQ(NormalizeMedicationName("ST JOHNS WORT"), "st johns wort");
  EXPECT_EQ(NormalizeMedicationName("st johns wort"), "st johns wort");
}

TEST(NormalizeMedicationNameTest, CurlyApostropheIsAnApostrophe) {
  EXPECT_EQ(NormalizeMedicationName("St. John\u2019s Wort"), "st johns wort");
  EXPECT_EQ(NormalizeMedicationName("John\u2019"), "john");  // at the very end
}

TEST(NormalizeMedicationNameTest, ApostropheJoinsTheWordsAroundIt) {
  EXPECT_EQ(NormalizeMedicationName("O'Neil's tonic"), "oneils tonic");
  EXPECT_EQ(NormalizeMedicationName("rock ' roll"), "rock roll");
}

TEST(NormalizeMedicationNameTest, EveryRunOfPunctuationIsOneSpace) {
  EXPECT_EQ(NormalizeMedicationName("Vitamin-A"), "vitamin a");
  EXPECT_EQ(NormalizeMedicationName("vitamin  --  a"), "vitamin a");
  EXPECT_EQ(NormalizeMedicationName("Doxycycline (100 mg)"), "doxycycline 100 mg");
  EXPECT_EQ(NormalizeMedicationName("co-trimoxazole/trimethoprim"), "co trimoxazole trimethoprim");
  EXPECT_EQ(NormalizeMedicationName("a\t\nb"), "a b");
  EXPECT_EQ(NormalizeMedicationName("a.'.b"), "a b");
}

TEST(NormalizeMedicationNameTest, TrimsBothEnds) {
  EXPECT_EQ(NormalizeMedicationName("  Doxycycline  "), "doxycycline");
  EXPECT_EQ(NormalizeMedicationName("...alcohol!!!"), "alcohol");
  EXPECT_EQ(NormalizeMedicationName("'prednisone'"), "prednisone");
}

TEST(NormalizeMedicationNameTest, KeepsDigits) {
  EXPECT_EQ(NormalizeMedicationName("Vitamin B12 1000mcg"), "vitamin b12 1000mcg");
}

TEST(NormalizeMedicationNameTest, EmptyAndPunctuationOnly) {
  EXPECT_EQ(NormalizeMedicationName(""), "");
  EXPECT_EQ(NormalizeMedicationName("---"), "");
  EXPECT_EQ(NormalizeMedicationName("'"), "");
  EXPECT_EQ(NormalizeMedicationName(" "), "");
}

TEST(NormalizeMedicationNameTest, KeepsNonAsciiLetters) {
  EXPECT_EQ(NormalizeMedicationName("\u00e9chinac\u00e9e"), "\u00e9chinac\u00e9e");
  EXPECT_EQ(NormalizeMedicationName("Johanniskraut \u00f6l"), "johanniskraut \u00f6l");
}

TEST(NormalizeMedicationNameTest, TruncatedUtf8DoesNotReadPastTheEnd) {
  EXPECT_EQ(NormalizeMedicationName("abc\xE2"), "abc\xE2");
  EXPECT_EQ(NormalizeMedicationName("abc\xE2\x80"), "abc\xE2\x80");
}

// The contract reads "every run of other non-alphanumeric characters" as one space: a
// no-break space (U+00A0, common in names pasted from documents) and an en dash (U+2013) are
// such characters, so "St\u00a0John's Wort" must match "st johns wort".
TEST(NormalizeMedicationNameTest, NonAsciiSpacesAndDashesSeparateWords) {
  EXPECT_EQ(NormalizeMedicationName("St\u00a0John's\u00a0Wort"), "st johns wort");
  EXPECT_EQ(NormalizeMedicationName("vitamin \u2013 a"), "vitamin a");
}

// --- ContainsWholeWords -------------------------------------------------------------------

TEST(ContainsWholeWordsTest, FindsAWordAtTheStart) {
  EXPECT_TRUE(ContainsWholeWords("doxycycline 100 mg", "doxycycline"));
}

TEST(ContainsWholeWordsTest, FindsSeveralWords) {
  EXPECT_TRUE(ContainsWholeWords("vitamin a 10000 iu", "vitamin a"));
  EXPECT_TRUE(ContainsWholeWords("extract of st johns wort", "st johns wort"));
  EXPECT_TRUE(ContainsWholeWords("st johns wort extract", "johns wort"));
}

TEST(ContainsWholeWordsTest, FindsTheWholeText) {
  EXPECT_TRUE(ContainsWholeWords("doxycycline", "doxycycline"));
  EXPECT_TRUE(ContainsWholeWords("vitamin a", "vitamin a"));
}

TEST(ContainsWholeWordsTest, RejectsPartsOfWords) {
  EXPECT_FALSE(ContainsWholeWords("vitamin ab", "vitamin a"));
  EXPECT_FALSE(ContainsWholeWords("multivitamin a", "vitamin a"));
  EXPECT_FALSE(ContainsWholeWords("doxycyclines", "doxycycline"));
  EXPECT_FALSE(ContainsWholeWords("minocycline", "cycline"));
  EXPECT_FALSE(ContainsWholeWords("alcohol free", "alcoholic"));
}

// A partial match earlier in the text must not hide a whole-word match later.
TEST(ContainsWholeWordsTest, LooksPastAPartialMatch) {
  EXPECT_TRUE(ContainsWholeWords("vitamin ab vitamin a", "vitamin a"));
  EXPECT_TRUE(ContainsWholeWords("multivitamin vitamin", "vitamin"));
}

TEST(ContainsWholeWordsTest, EmptyInputs) {
  EXPECT_FALSE(ContainsWholeWords("", "doxycycline"));
  EXPECT_FALSE(ContainsWholeWords("doxycycline", ""));
  EXPECT_FALSE(ContainsWholeWords("", ""));
  EXPECT_FALSE(ContainsWholeWords("vitamin", "vitamin a"));
}

// --- NormalizeAtc -------------------------------------------------------------------------

TEST(NormalizeAtcTest, UpperCasesAndDropsSpaces) {
  EXPECT_EQ(NormalizeAtc(" j01aa02 "), "J01AA02");
  EXPECT_EQ(NormalizeAtc("d10 ba01"), "D10BA01");
  EXPECT_EQ(NormalizeAtc("J01AA02"), "J01AA02");
  EXPECT_EQ(NormalizeAtc(""), "");
}

// --- FormatNumber -------------------------------------------------------------------------

TEST(FormatNumberTest, IntegersHaveNoFraction) {
  EXPECT_EQ(FormatNumber(3600), "3600");
  EXPECT_EQ(FormatNumber(60.0), "60");
  EXPECT_EQ(FormatNumber(0), "0");
  EXPECT_EQ(FormatNumber(-40), "-40");
  EXPECT_EQ(FormatNumber(-0.0), "0");
  EXPECT_EQ(FormatNumber(9007199254740992.0), "9007199254740992");
}

TEST(FormatNumberTest, FractionsAreShortest) {
  EXPECT_EQ(FormatNumber(0.51), "0.51");
  EXPECT_EQ(FormatNumber(0.92), "0.92");
  EXPECT_EQ(FormatNumber(55.4), "55.4");
  EXPECT_EQ(FormatNumber(500.01), "500.01");
  EXPECT_EQ(FormatNumber(-2.5), "-2.5");
  EXPECT_EQ(FormatNumber(-0.51), "-0.51");
}

TEST(FormatNumberTest, ReadsBackToTheSameDouble) {
  for (double v : {0.1 + 0.2, 1.0 / 3.0, 88.57, 38.67, 1e-7, 123456.789}) {
    EXPECT_EQ(std::stod(FormatNumber(v)), v) << FormatNumber(v);
  }
}

// --- RoundHalfUp --------------------------------------------------------------------------

TEST(RoundHalfUpTest, RoundsValuesAsWritten) {
  // 0.285 and 1.005 are stored just below the half; rounding follows the decimal as written.
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.285, 2), 0.29);
  EXPECT_DOUBLE_EQ(RoundHalfUp(1.005, 2), 1.01);
  EXPECT_DOUBLE_EQ(RoundHalfUp(2.675, 2), 2.68);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.5125, 2), 0.51);
}

TEST(RoundHalfUpTest, RoundsHalfUpNotToEven) {
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.5, 0), 1.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(1.5, 0), 2.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(2.5, 0), 3.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.125, 2), 0.13);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.375, 2), 0.38);
}

TEST(RoundHalfUpTest, RoundsDownBelowTheHalf) {
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.92307692, 2), 0.92);
  EXPECT_DOUBLE_EQ(RoundHalfUp(55.444, 1), 55.4);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.494, 2), 0.49);
  EXPECT_DOUBLE_EQ(RoundHalfUp(123.456, 0), 123.0);
}

TEST(RoundHalfUpTest, RoundsHalfAwayFromZeroForNegatives) {
  EXPECT_DOUBLE_EQ(RoundHalfUp(-0.285, 2), -0.29);
  EXPECT_DOUBLE_EQ(RoundHalfUp(-2.5, 0), -3.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(-0.494, 2), -0.49);
}

TEST(RoundHalfUpTest, KeepsValuesAlreadyRounded) {
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.5, 2), 0.5);
  EXPECT_DOUBLE_EQ(RoundHalfUp(1.0, 2), 1.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.0, 2), 0.0);
  EXPECT_DOUBLE_EQ(RoundHalfUp(0.8, 2), 0.8);
}

}  // namespace
}  // namespace isoguard
