#include "core/json_writer.h"

#include <gtest/gtest.h>

namespace isoguard {
namespace {

std::string Quoted(std::string_view s) {
  std::string out;
  AppendJsonString(out, s);
  return out;
}

TEST(JsonWriterTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(Quoted("plain"), "\"plain\"");
  EXPECT_EQ(Quoted("say \"no\""), "\"say \\\"no\\\"\"");
  EXPECT_EQ(Quoted("a\\b"), "\"a\\\\b\"");
  EXPECT_EQ(Quoted("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
  EXPECT_EQ(Quoted(std::string_view("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(Quoted(""), "\"\"");
  EXPECT_EQ(Quoted("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 passes through
}

TEST(JsonWriterTest, WritesNestedStructuresWithCommas) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("a").Integer(-12);
  w.Key("b").BeginArray().Number(3600).Number(0.51).Null().Bool(true).EndArray();
  w.Key("c").BeginObject().EndObject();
  w.Key("d").String("x");
  w.EndObject();
  EXPECT_EQ(out, "{\"a\":-12,\"b\":[3600,0.51,null,true],\"c\":{},\"d\":\"x\"}");
}

}  // namespace
}  // namespace isoguard
