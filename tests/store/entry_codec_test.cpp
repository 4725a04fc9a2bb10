// The entry codec, backend-independent: entries checked exactly as the record parser checks
// the same objects inside a record, errors renamed to the entry's place in the append, ids
// written into the stored JSON, payloads sealed to their patient and version, and the hash
// chain's byte layout (pinned by a known answer: every backend must produce the same hashes).
#include "store/entry_codec.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>

#include "store/projection.h"
#include "store_test_support.h"

namespace isoguard::store::testing {
namespace {

void PutU64(std::string& out, uint64_t n) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
}

// States are sealed compressed (format 3); those sealed plain (format 2, before) still open.
TEST(StateSealing, CompressedNowAndPlainBeforeBothOpen) {
  const PatientKey key = PatientKey::Generate();
  StateText state;
  state.patient =
      R"({"id":"p-1","birth_date":"2000-01-01","jurisdiction":"US","category":"can_get_pregnant"})";
  for (int i = 0; i < 40; ++i) {
    if (i > 0) state.events += ",";
    state.events += R"({"type":"weight","id":"e)" + std::to_string(i) +
                    R"(","at":"2026-09-01T10:00:00Z","kg":60.5})";
    ++state.event_count;
  }
  const std::string sealed = SealState(key, "p-1", 41, state);
  EXPECT_EQ(static_cast<uint8_t>(sealed[0]), 3);
  EXPECT_LT(sealed.size(), (state.patient.size() + state.events.size()) / 2);
  auto opened = OpenState(key, "p-1", 41, sealed);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_EQ(opened->patient, state.patient);
  EXPECT_EQ(opened->events, state.events);
  EXPECT_EQ(opened->event_count, 40);
  EXPECT_FALSE(OpenState(key, "p-1", 40, sealed).ok());  // bound to its version

  // Format 2: the same layout, not deflated, under the same associated data.
  std::string plain;
  PutU64(plain, state.patient.size());
  plain += state.patient;
  PutU64(plain, static_cast<uint64_t>(state.event_count));
  plain += state.events;
  std::string ad = "isoguard.state.v1";
  PutU64(ad, 3);
  ad += "p-1";
  PutU64(ad, 41);
  const std::string old = SealWithKey(key, 2, ad, plain);
  auto old_opened = OpenState(key, "p-1", 41, old);
  ASSERT_TRUE(old_opened.ok()) << old_opened.error().ToString();
  EXPECT_EQ(old_opened->events, state.events);

  // A damaged size is refused, not trusted.
  std::string packed;
  PutU64(packed, uint64_t{1} << 40);
  packed += "not an LZ4 block";
  EXPECT_FALSE(OpenState(key, "p-1", 41, SealWithKey(key, 3, ad, packed)).ok());
}

const ParseOptions kOptions{};

TEST(EntryCodec, PatientAndEventEntriesAreCheckedAsInARecord) {
  auto patient = CheckEntry(PatientEntry("p-1"), 0, "p-1", kOptions);
  ASSERT_TRUE(Ok(patient));
  EXPECT_TRUE(patient->is_patient);
  EXPECT_EQ(patient->type, "patient");
  EXPECT_TRUE(patient->event_id.empty());

  auto dispense = CheckEntry(DispenseEntry("rx-1"), 3, "p-1", kOptions);
  ASSERT_TRUE(Ok(dispense));
  EXPECT_FALSE(dispense->is_patient);
  EXPECT_EQ(dispense->type, "dispense");
  EXPECT_EQ(dispense->prescription_ref, "rx-1");
  EXPECT_FALSE(dispense->has_null_id);

  auto with_id = CheckEntry(PrescriptionEntry("rx-1"), 0, "p-1", kOptions);
  ASSERT_TRUE(Ok(with_id));
  EXPECT_EQ(with_id->event_id, "rx-1");

  auto null_id =
      CheckEntry(R"({"type": "weight", "id": null, "at": "2026-09-01T10:00:00Z", "kg": 60})", 0,
                 "p-1", kOptions);
  ASSERT_TRUE(Ok(null_id));
  EXPECT_TRUE(null_id->has_null_id);
  EXPECT_TRUE(null_id->event_id.empty());
}

// The same object gives the same message inside a record (events[i].field) and as an entry
// (entries[i].field): the parser is the single source of truth.
TEST(EntryCodec, ErrorsAreTheParsersRenamedToTheEntry) {
  const std::vector<std::string> bad_events = {
      R"({"type": "weight", "at": "2026-09-01T10:00:00Z", "kg": 501})",
      R"({"type": "weight", "at": "2026-09-01T10:00:00Z"})",
      R"({"type": "prescription", "id": "rx-1", "at": "2026-09-01T10:00:00Z",
          "product": "generic", "doses_mg": [40, 0], "days_supply": 30, "refills": 0})",
      R"({"type": "phq9", "at": "2026-09-01T10:00:00Z", "items": [0, 1, 2]})",
      R"({"type": "lab", "at": "2026-09-01T10:00:00Z", "test": "ALT", "value": 1,
          "unit": "mg/dL"})",
      R"({"type": "visit", "at": "2026-09-01T10:00:00Z", "counseled": "yes"})",
      R"({"type": "enrollment", "id": "", "at": "2026-09-01T10:00:00Z"})",
      R"({"type": "weight", "at": "yesterday", "kg": 60})",
  };
  for (const std::string& event : bad_events) {
    SCOPED_TRACE(event);
    const std::string record = R"({"patient": )" + PatientEntry("p-1") + R"(, "events": [)" +
                               WeightEntry(60) + ", " + event + "]}";
    auto parsed = ParseRecord(record, kOptions);
    ASSERT_FALSE(parsed.ok());
    auto entry = CheckEntry(event, 1, "p-1", kOptions);
    ASSERT_FALSE(entry.ok());
    EXPECT_EQ(entry.error().kind, ErrorKind::kBadInput);
    EXPECT_EQ(entry.error().message, parsed.error().message);
    ASSERT_TRUE(parsed.error().field.starts_with("events[1]")) << parsed.error().field;
    EXPECT_EQ(entry.error().field, "entries[1]" + parsed.error().field.substr(9));
  }
  const std::string bad_patient = R"({"type": "patient", "id": "p-1", "birth_date": "2000-05-14",
                                      "jurisdiction": "FR", "category": "can_get_pregnant"})";
  auto parsed = ParseRecord(R"({"patient": )" + bad_patient + R"(, "events": []})", kOptions);
  ASSERT_FALSE(parsed.ok());
  auto entry = CheckEntry(bad_patient, 0, "p-1", kOptions);
  ASSERT_FALSE(entry.ok());
  EXPECT_EQ(parsed.error().field, "patient.jurisdiction");
  EXPECT_EQ(entry.error().field, "entries[0].jurisdiction");
  EXPECT_EQ(entry.error().message, parsed.error().message);
}

TEST(EntryCodec, KnownProgramsAreCheckedWhenTheOptionsSaySo) {
  ParseOptions options;
  options.is_known_program = [](std::string_view id) { return id == "us-ipledge-2026"; };
  const std::string known =
      R"({"type": "enrollment", "at": "2026-09-01T10:00:00Z", "program": "us-ipledge-2026"})";
  const std::string unknown =
      R"({"type": "enrollment", "at": "2026-09-01T10:00:00Z", "program": "mars-2090"})";
  EXPECT_TRUE(Ok(CheckEntry(known, 0, "p-1", options)));
  EXPECT_TRUE(Fails(CheckEntry(unknown, 0, "p-1", options), ErrorKind::kBadInput,
                    "entries[0].program", "unknown program"));
  // Read back, an entry written under another build's programs stays readable.
  EXPECT_TRUE(Ok(CheckEntry(unknown, 0, "p-1", ReadBackOptions(options))));
}

TEST(EntryCodec, RequestShapeIsChecked) {
  AppendRequest r = Request("p-1", {WeightEntry(60)});
  r.expected_version = -1;
  EXPECT_TRUE(Fails(CheckAppend(r, kOptions), ErrorKind::kBadInput, "expected_version"));
  r = Request("p-1", {WeightEntry(60)});
  r.actor.role.clear();
  EXPECT_TRUE(Fails(CheckAppend(r, kOptions), ErrorKind::kBadInput, "actor.role"));
  r = Request("p-1", {WeightEntry(60)});
  r.actor.source.clear();  // optional
  EXPECT_TRUE(Ok(CheckAppend(r, kOptions)));
  r.idempotency_key = std::string(kMaxNameBytes, 'k');
  EXPECT_TRUE(Ok(CheckAppend(r, kOptions)));
  r.idempotency_key.push_back('k');
  EXPECT_TRUE(Fails(CheckAppend(r, kOptions), ErrorKind::kBadInput, "idempotency_key"));
  EXPECT_TRUE(Fails(CheckErasure("", TestActor()), ErrorKind::kBadInput, "patient_id"));
}

TEST(EntryCodec, StoredJsonWritesTheAssignedIdIntoEvents) {
  for (const std::string& text :
       {std::string(R"({"type": "weight", "at": "2026-09-01T10:00:00Z", "kg": 60})"),
        std::string("  \n{ \"type\":\"weight\",\"at\":\"2026-09-01T10:00:00Z\",\"kg\":60.50}  "),
        std::string(R"({"type": "weight", "id": null, "at": "2026-09-01T10:00:00Z", "kg": 60})")}) {
    SCOPED_TRACE(text);
    auto entry = CheckEntry(text, 0, "p-1", kOptions);
    ASSERT_TRUE(Ok(entry));
    const std::string stored = StoredJson(*entry, "p-1-\"7\"");
    auto again = CheckEntry(stored, 0, "p-1", kOptions);
    ASSERT_TRUE(Ok(again));
    EXPECT_EQ(again->event_id, "p-1-\"7\"");
    EXPECT_TRUE(SameJson(stored, WithId(text, "p-1-\"7\"")));
  }
  // Given ids and patient entries are stored exactly as given.
  const std::string given = PrescriptionEntry("rx-1");
  EXPECT_EQ(StoredJson(*CheckEntry(given, 0, "p-1", kOptions), "ignored"), given);
  const std::string patient = PatientEntry("p-1");
  EXPECT_EQ(StoredJson(*CheckEntry(patient, 0, "p-1", kOptions), "p-1-1"), patient);
  EXPECT_EQ(AssignedEventId("p-1", 12, 0), "p-1-12");
  EXPECT_EQ(AssignedEventId("p-1", 12, 2), "p-1-12.2");
}

TEST(EntryCodec, PayloadsOpenOnlyForTheirPatientVersionAndKey) {
  const PatientKey key = PatientKey::Generate();
  const std::string plaintext = WeightEntry(60);
  const std::string sealed = SealPayload(key, "p-1", 3, plaintext);
  EXPECT_EQ(sealed.size(), 1 + 24 + plaintext.size() + 16);
  EXPECT_EQ(sealed.find("weight"), std::string::npos);
  auto opened = OpenPayload(key, "p-1", 3, sealed);
  ASSERT_TRUE(Ok(opened));
  EXPECT_EQ(*opened, plaintext);
  // A fresh nonce each time.
  EXPECT_NE(SealPayload(key, "p-1", 3, plaintext), sealed);

  EXPECT_FALSE(OpenPayload(key, "p-1", 4, sealed).ok());
  EXPECT_FALSE(OpenPayload(key, "p-2", 3, sealed).ok());
  EXPECT_FALSE(OpenPayload(PatientKey::Generate(), "p-1", 3, sealed).ok());
  std::string flipped = sealed;
  flipped[30] = static_cast<char>(flipped[30] ^ 1);
  EXPECT_FALSE(OpenPayload(key, "p-1", 3, flipped).ok());
  EXPECT_FALSE(OpenPayload(key, "p-1", 3, sealed.substr(0, 20)).ok());

  EXPECT_FALSE(PatientKey::FromBytes("short").ok());
  auto copy = PatientKey::FromBytes(key.bytes());
  ASSERT_TRUE(Ok(copy));
  EXPECT_TRUE(Ok(OpenPayload(*copy, "p-1", 3, sealed)));
}

EntryRow ExampleRow() {
  EntryRow row;
  row.position = 41;
  row.patient_id = "p-0001";
  row.version = 7;
  row.event_id = "rx-2";
  row.type = "prescription";
  row.payload = std::string(
                    "\x01"
                    "payload") +
                std::string(1, '\0') + "bytes";
  row.recorded_at_ms = 1789000000123;
  row.actor = Actor{"dr-smith", "prescriber", "cli"};
  row.idempotency_key = "visit-2026-09-01";
  for (size_t i = 0; i < row.prev_hash.size(); ++i) row.prev_hash[i] = static_cast<uint8_t>(i);
  return row;
}

// The layout of EntryHash is part of the stored format: a change would break every chain
// written before it. Pinned here by a known answer.
TEST(EntryCodec, EntryHashHasAFixedLayout) {
  // Computed independently of this code (Python's hashlib over the layout of entry_codec.h).
  EXPECT_EQ(HashHex(EntryHash(ExampleRow())),
            "6d843e69627fa0efe568f8a193d86e59133685cd596752e56a829a0e0ade8624");
}

TEST(EntryCodec, EntryHashCoversEveryFieldButThePosition) {
  const Hash base = EntryHash(ExampleRow());
  EntryRow row = ExampleRow();
  row.position = 9;
  row.hash[0] = 1;
  EXPECT_EQ(EntryHash(row), base);
  const std::vector<std::function<void(EntryRow&)>> changes = {
      [](EntryRow& r) { r.prev_hash[31] ^= 1; },
      [](EntryRow& r) { r.patient_id += "x"; },
      [](EntryRow& r) { r.version += 1; },
      [](EntryRow& r) { r.event_id = "rx-3"; },
      [](EntryRow& r) { r.type = "dispense"; },
      [](EntryRow& r) { r.payload[3] ^= 1; },
      [](EntryRow& r) { r.recorded_at_ms += 1; },
      [](EntryRow& r) { r.actor.id = "dr-jones"; },
      [](EntryRow& r) { r.actor.role = "pharmacist"; },
      [](EntryRow& r) { r.actor.source = "api"; },
      [](EntryRow& r) { r.idempotency_key.clear(); },
      // Fields cannot run into each other: moving a character across a boundary shows.
      [](EntryRow& r) {
        r.actor.id = "dr-smithp";
        r.actor.role = "rescriber";
      },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    EntryRow changed = ExampleRow();
    changes[i](changed);
    EXPECT_NE(EntryHash(changed), base) << "change " << i;
  }
}

TEST(EntryCodec, ChainCheckFindsGapsBrokenLinksAndChangedRows) {
  std::vector<EntryRow> rows(3, ExampleRow());
  Hash prev{};
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].version = static_cast<int64_t>(i) + 1;
    rows[i].position = 10 * (static_cast<int64_t>(i) + 1);
    rows[i].prev_hash = prev;
    rows[i].hash = EntryHash(rows[i]);
    prev = rows[i].hash;
  }
  {
    ChainCheck chain;
    for (const EntryRow& r : rows) EXPECT_TRUE(Ok(chain.Next(r)));
    EXPECT_EQ(chain.version(), 3);
  }
  {
    ChainCheck chain;
    ASSERT_TRUE(Ok(chain.Next(rows[0])));
    auto gap = chain.Next(rows[2]);
    ASSERT_FALSE(gap.ok());
    EXPECT_NE(gap.error().message.find("patient p-0001 version 3: out of sequence"),
              std::string::npos)
        << gap.error().message;
  }
  {
    ChainCheck chain;
    EntryRow changed = rows[0];
    changed.payload[2] ^= 1;
    auto st = chain.Next(changed);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("version 1: hash does not match"), std::string::npos);
  }
  {
    ChainCheck chain;
    ASSERT_TRUE(Ok(chain.Next(rows[0])));
    EntryRow relinked = rows[1];
    relinked.prev_hash[0] ^= 1;
    relinked.hash = EntryHash(relinked);  // a consistent row that links to the wrong place
    auto st = chain.Next(relinked);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("prev_hash does not match"), std::string::npos);
  }
}

TEST(EntryCodec, DecodeBindsTheRowsColumnsToThePayload) {
  const PatientKey key = PatientKey::Generate();
  EntryRow row = ExampleRow();
  row.type = "prescription";
  row.event_id = "rx-2";
  row.payload = SealPayload(key, row.patient_id, row.version, PrescriptionEntry("rx-2"));
  auto decoded = DecodeEntry(row, &key, kOptions);
  ASSERT_TRUE(Ok(decoded));
  EXPECT_EQ(decoded->json, PrescriptionEntry("rx-2"));
  EXPECT_FALSE(decoded->erased);

  auto erased = DecodeEntry(row, nullptr, kOptions);
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
  EXPECT_TRUE(erased->json.empty());

  EntryRow wrong_type = row;
  wrong_type.type = "dispense";
  EXPECT_TRUE(Fails(DecodeEntry(wrong_type, &key, kOptions), ErrorKind::kInternal, "",
                    "the row says type 'dispense'"));
  EntryRow wrong_id = row;
  wrong_id.event_id = "rx-9";
  EXPECT_TRUE(Fails(DecodeEntry(wrong_id, &key, kOptions), ErrorKind::kInternal, "",
                    "the row says event id 'rx-9'"));
  // A payload that opens but is no longer a valid entry (a bug, or an old build's limits).
  EntryRow invalid = row;
  invalid.type = "weight";
  invalid.payload = SealPayload(key, row.patient_id, row.version,
                                R"({"type": "weight", "id": "rx-2", "at": "x", "kg": 60})");
  EXPECT_TRUE(Fails(DecodeEntry(invalid, &key, kOptions), ErrorKind::kInternal, "",
                    "patient p-0001 version 7: the stored entry is not valid (at: "));
}

}  // namespace
}  // namespace isoguard::store::testing

namespace isoguard::store {
namespace {

// Nonces come from a per-thread buffer. A forked child inherits the buffer; were it to hand out
// the parent's next nonces, parent and child could seal under one patient key with one nonce.
TEST(EntryCodec, AForkedChildNeverReusesItsParentsBufferedNonces) {
  std::array<unsigned char, 24> first{}, parent_next{}, child_next{};
  FreshNonce(first.data());  // fills the parent's buffer
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::array<unsigned char, 24> nonce{};
    FreshNonce(nonce.data());
    const bool sent =
        ::write(pipe_fds[1], nonce.data(), nonce.size()) == static_cast<ssize_t>(nonce.size());
    ::_exit(sent ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  FreshNonce(parent_next.data());
  ASSERT_EQ(::read(pipe_fds[0], child_next.data(), child_next.size()),
            static_cast<ssize_t>(child_next.size()));
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(child_next, parent_next);
  EXPECT_NE(child_next, first);
  EXPECT_NE(parent_next, first);
}

}  // namespace
}  // namespace isoguard::store
