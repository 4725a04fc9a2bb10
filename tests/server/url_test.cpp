// Percent-encoding and decoding of request targets (src/server/url.h).
#include "server/url.h"

#include <gtest/gtest.h>

namespace isoguard::server {
namespace {

TEST(UrlTest, PercentEncodeKeepsUnreservedAndWhatItIsToldTo) {
  EXPECT_EQ(PercentEncode("Az09-._~"), "Az09-._~");
  EXPECT_EQ(PercentEncode("a|b c/d"), "a%7Cb%20c%2Fd");
  EXPECT_EQ(PercentEncode("Observation?code=x|1&patient=p", "/?=&:"),
            "Observation?code=x%7C1&patient=p");
  EXPECT_EQ(PercentEncode("p\xc3\xa9"), "p%C3%A9");  // UTF-8, byte by byte
  EXPECT_EQ(PercentEncode(std::string("\0", 1)), "%00");
  EXPECT_EQ(PercentEncode(""), "");
}

TEST(UrlTest, PercentDecodeUndoesPercentEncode) {
  for (const std::string text : {"a|b c/d", "p\xc3\xa9-1", "100%", "x+y"}) {
    auto decoded = PercentDecode(PercentEncode(text));
    ASSERT_TRUE(decoded.has_value()) << text;
    EXPECT_EQ(*decoded, text);
  }
  EXPECT_FALSE(PercentDecode("%4").has_value());
  EXPECT_FALSE(PercentDecode("%zz").has_value());
  EXPECT_FALSE(PercentDecode("%FF").has_value());  // not UTF-8
  EXPECT_EQ(PercentDecode("a+b", true), "a b");
}

}  // namespace
}  // namespace isoguard::server
