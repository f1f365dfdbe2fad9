// Fieldwise AI app card for HubSpot contact and deal records.
//
// Data comes from Fieldwise's /cards/hubspot through hubspot.fetch: HubSpot signs each request so
// Fieldwise can verify it, and only hosts listed in app-hsmeta.json permittedUrls.fetch are
// reachable. HubSpot appends portalId, userId, userEmail and appId to the URL before signing, so
// Fieldwise knows the account and the user. The answer is a JSON object keyed by result name
// (score, grade, reasons with evidence, suggested_owner, next_step, battle_card, forecast_note,
// risk_flags, feedback); keys that are missing or null are simply not shown.
import React, { useCallback, useEffect, useState } from "react";
import {
  Button,
  ButtonRow,
  Divider,
  EmptyState,
  ErrorState,
  Flex,
  Heading,
  List,
  LoadingSpinner,
  Statistics,
  StatisticsItem,
  Tag,
  Text,
  hubspot,
} from "@hubspot/ui-extensions";

// The one host the card talks to; it must also be listed in app-hsmeta.json permittedUrls.fetch.
// `fieldwise widgets build` replaces the placeholder with the deployment's FIELDWISE_PUBLIC_URL.
const FIELDWISE_URL = "__FIELDWISE_PUBLIC_URL__";
const CARD_PATH = "/cards/hubspot";
const FEEDBACK_PATH = "/feedback";
const TIMEOUT_MS = 10000;

hubspot.extend(({ context }) => <FieldwiseCard context={context} />);

function FieldwiseCard({ context }) {
  const objectTypeId = context.crm.objectTypeId;
  const objectId = String(context.crm.objectId);
  const [card, setCard] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [feedback, setFeedback] = useState(null);

  const load = useCallback(async () => {
    setLoading(true);
    setError(null);
    try {
      const query = new URLSearchParams({ objectTypeId, objectId }).toString();
      const response = await hubspot.fetch(`${FIELDWISE_URL}${CARD_PATH}?${query}`, {
        method: "GET",
        timeout: TIMEOUT_MS,
      });
      if (!response.ok) {
        throw new Error(`Fieldwise answered ${response.status}`);
      }
      setCard(await response.json());
    } catch (e) {
      setCard(null);
      setError(e.message || "Fieldwise is not available right now.");
    } finally {
      setLoading(false);
    }
  }, [objectTypeId, objectId]);

  useEffect(() => {
    load();
  }, [load]);

  const sendFeedback = async (vote) => {
    try {
      const response = await hubspot.fetch(`${FIELDWISE_URL}${FEEDBACK_PATH}`, {
        method: "POST",
        timeout: TIMEOUT_MS,
        body: {
          crm: "hubspot",
          object_type: objectTypeId,
          record_id: objectId,
          result: "score",
          vote,
          user_id: String(context.user.id),
        },
      });
      setFeedback(response.ok ? "sent" : "failed");
    } catch (e) {
      setFeedback("failed");
    }
  };

  if (loading) {
    return <LoadingSpinner label="Loading Fieldwise insights" />;
  }
  if (error) {
    return (
      <ErrorState title="Fieldwise insights are unavailable">
        <Text>{error}</Text>
        <Button onClick={load}>Try again</Button>
      </ErrorState>
    );
  }
  if (!card || card.score === undefined || card.score === null) {
    return (
      <EmptyState title="Not scored yet" layout="vertical">
        <Text>Fieldwise scores this record after its next change or the nightly run.</Text>
      </EmptyState>
    );
  }

  const reasons = (Array.isArray(card.reasons)
    ? card.reasons
    : String(card.reasons || "").split("\n")
  )
    .map((reason) => (reason && typeof reason === "object" ? reason.text : String(reason)))
    .filter((line) => line && line.trim());
  const flags = card.risk_flags && Array.isArray(card.risk_flags.flags) ? card.risk_flags.flags : [];
  const owner =
    card.suggested_owner && typeof card.suggested_owner === "object"
      ? card.suggested_owner.name || card.suggested_owner.id
      : card.suggested_owner;

  return (
    <Flex direction="column" gap="small">
      <Statistics>
        <StatisticsItem label="AI Score" number={String(Math.round(Number(card.score)))} />
      </Statistics>
      {card.grade ? <Tag variant={gradeVariant(card.grade)}>AI Grade {card.grade}</Tag> : null}
      {reasons.length > 0 ? (
        <>
          <Heading>Why</Heading>
          <List variant="unordered">
            {reasons.map((reason, index) => (
              <Text key={`reason-${index}`}>{reason}</Text>
            ))}
          </List>
        </>
      ) : null}
      {owner ? (
        <>
          <Heading>Suggested owner</Heading>
          <Text>{owner}</Text>
        </>
      ) : null}
      {card.next_step ? (
        <>
          <Heading>Next step</Heading>
          <Text>{card.next_step}</Text>
        </>
      ) : null}
      {card.battle_card ? (
        <>
          <Divider />
          <Heading>Battle card</Heading>
          {detailLines(card.battle_card).map((line, index) => (
            <Text key={`battle-${index}`}>{line}</Text>
          ))}
        </>
      ) : null}
      {card.forecast_note ? (
        <>
          <Divider />
          <Heading>Forecast note</Heading>
          {detailLines(card.forecast_note).map((line, index) => (
            <Text key={`forecast-${index}`}>{line}</Text>
          ))}
        </>
      ) : null}
      {flags.length > 0 ? (
        <>
          <Heading>Risk flags</Heading>
          {flags.map((flag, index) => (
            <Tag key={`flag-${index}`} variant="warning">
              {flag.label || flag.name || flag.kind || String(flag)}
            </Tag>
          ))}
        </>
      ) : null}
      <Divider />
      {feedback === "sent" ? (
        <Text variant="microcopy">Thanks, your feedback was recorded.</Text>
      ) : (
        <ButtonRow>
          <Button onClick={() => sendFeedback("up")}>👍 Looks right</Button>
          <Button onClick={() => sendFeedback("down")}>👎 Looks wrong</Button>
        </ButtonRow>
      )}
      {feedback === "failed" ? (
        <Text variant="microcopy">Feedback could not be sent; please try again.</Text>
      ) : null}
    </Flex>
  );
}

function gradeVariant(grade) {
  return { A: "success", B: "info", C: "warning", D: "danger" }[grade] || "default";
}

// A copilot result's structured detail as plain lines: section titles, then their bullets.
// UI extensions render no raw HTML, so text values are stripped of tags too.
function detailLines(detail) {
  if (detail && typeof detail === "object") {
    const lines = [];
    if (detail.summary) lines.push(String(detail.summary));
    (detail.sections || []).forEach((section) => {
      if (section.title) lines.push(String(section.title));
      (section.bullets || []).forEach((bullet) =>
        lines.push(`• ${bullet && typeof bullet === "object" ? bullet.text : bullet}`)
      );
    });
    if (lines.length === 0 && detail.text) return htmlLines(detail.text);
    return lines;
  }
  return htmlLines(detail);
}

function htmlLines(html) {
  return String(html)
    .replace(/<\s*(br|\/p|\/li|\/h\d)\s*\/?>/gi, "\n")
    .replace(/<[^>]+>/g, "")
    .replace(/&nbsp;/g, " ")
    .replace(/&amp;/g, "&")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}
