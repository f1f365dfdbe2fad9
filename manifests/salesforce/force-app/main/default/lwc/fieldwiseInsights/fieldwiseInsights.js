// Record-page card for Fieldwise's AI results on leads, contacts and opportunities.
//
// Data comes from Fieldwise's /cards/salesforce/<id> through the Apex class
// FieldwiseCardController, which calls out via the Named Credential Fieldwise_API: a component
// cannot reach an external host directly, and the credential keeps the tenant's secret out of code.
// The answer is a JSON object keyed by result name (score, grade, reasons with evidence,
// suggested_owner, next_step, battle_card, forecast_note, risk_flags, feedback); missing or null
// keys are simply not shown.
import { LightningElement, api } from "lwc";
import getCard from "@salesforce/apex/FieldwiseCardController.getCard";
import sendFeedback from "@salesforce/apex/FieldwiseCardController.sendFeedback";

export default class FieldwiseInsights extends LightningElement {
    @api recordId;

    card;
    error;
    loading = true;
    feedbackSent = false;
    feedbackError;

    connectedCallback() {
        this.load();
    }

    async load() {
        this.loading = true;
        this.error = undefined;
        try {
            this.card = JSON.parse(await getCard({ recordId: this.recordId }));
        } catch (e) {
            this.card = undefined;
            this.error = messageOf(e);
        } finally {
            this.loading = false;
        }
    }

    get hasCard() {
        return Boolean(this.card);
    }

    get hasScore() {
        return this.card && this.card.score !== undefined && this.card.score !== null;
    }

    get score() {
        return this.hasScore ? Math.round(Number(this.card.score)) : null;
    }

    get grade() {
        return this.card && this.card.grade ? this.card.grade : "";
    }

    get reasons() {
        const raw = this.card ? this.card.reasons : null;
        const list = Array.isArray(raw) ? raw : String(raw || "").split("\n");
        return list
            .map((reason) => String(reason && typeof reason === "object" ? reason.text : reason).trim())
            .filter((text) => text.length > 0)
            .map((text, index) => ({ key: `reason-${index}`, text }));
    }

    get hasReasons() {
        return this.reasons.length > 0;
    }

    get suggestedOwner() {
        const owner = this.card ? this.card.suggested_owner : null;
        if (owner && typeof owner === "object") {
            return owner.name || owner.id || "";
        }
        return owner || "";
    }

    get battleCard() {
        return detailLines(this.card ? this.card.battle_card : null);
    }

    get hasBattleCard() {
        return this.battleCard.length > 0;
    }

    get forecastNote() {
        return detailLines(this.card ? this.card.forecast_note : null);
    }

    get hasForecastNote() {
        return this.forecastNote.length > 0;
    }

    get nextStep() {
        return this.card && this.card.next_step ? this.card.next_step : "";
    }

    handleRefresh() {
        this.feedbackSent = false;
        this.load();
    }

    handleThumbsUp() {
        this.vote("up");
    }

    handleThumbsDown() {
        this.vote("down");
    }

    async vote(vote) {
        this.feedbackError = undefined;
        try {
            await sendFeedback({ recordId: this.recordId, result: "score", vote, reason: null });
            this.feedbackSent = true;
        } catch (e) {
            this.feedbackError = messageOf(e);
        }
    }
}

// A copilot result's structured detail as keyed lines: section titles, then their bullets.
function detailLines(detail) {
    const lines = [];
    if (detail && typeof detail === "object") {
        if (detail.summary) lines.push(String(detail.summary));
        (detail.sections || []).forEach((section) => {
            if (section.title) lines.push(String(section.title));
            (section.bullets || []).forEach((bullet) =>
                lines.push(`• ${bullet && typeof bullet === "object" ? bullet.text : bullet}`)
            );
        });
        if (lines.length === 0 && detail.text) lines.push(String(detail.text));
    } else if (detail) {
        lines.push(String(detail));
    }
    return lines.map((text, index) => ({ key: `line-${index}`, text }));
}

function messageOf(error) {
    if (error && error.body && error.body.message) {
        return error.body.message;
    }
    return error && error.message ? error.message : "Fieldwise is not available right now.";
}
