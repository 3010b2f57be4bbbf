"""The one prompt format: training, evaluation, chat and the router all go through here.

An example `{"instruction", "input", "output"}` becomes chat messages
(instruction + input -> user turn, output -> assistant turn), rendered with the
base model's own chat template. Keeping this in one place prevents the classic
train/serve skew where the model is trained on one layout and queried with another.

A pretrained base has no chat template; it is prompted in the plain layout it saw in pretraining,
"Question: ...\nAnswer: ...", each answer one line: a pretrained model goes on to write the next
"Question:" on the next line, so locomlx/models/load.py makes the newline a stop token for such models.
Multi-line answers (code) need a base with a chat template.
"""

from __future__ import annotations

from locomlx.errors import LocomlxError

REREAD = "Read the question again: "


def user_turn(question: str, reread: bool = False) -> dict:
    """The user's message. With `reread` (RE2, Xu et al. 2024, "Re-Reading Improves Reasoning in Large
    Language Models") the question is stated twice, so a left-to-right model reads all of it before answering."""
    question = question.strip()
    return {"role": "user", "content": f"{question}\n{REREAD}{question}" if reread else question}


def example_messages(instruction: str, input: str = "", output: str | None = None, reread: bool = False) -> list[dict]:
    """Chat messages for one example; the assistant turn is present only when `output` is given."""
    user = instruction.strip()
    if input and input.strip():
        user = f"{user}\n\n{input.strip()}"
    messages = [user_turn(user, reread)]
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return messages


PLAIN_QUESTION, PLAIN_ANSWER = "Question: ", "\nAnswer:"
PLAIN_ENDS = ("\n", "\n\n")  # what ends a plain answer, as the tokenizer may spell it


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _plain_text(messages: list[dict]) -> str:
    """The plain layout of `messages`, ending with "Answer:" after the last question."""
    text = ""
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "user":
            text += f"{PLAIN_QUESTION}{content}{PLAIN_ANSWER}"
        elif message["role"] == "assistant":
            text += f" {content}{PLAIN_ENDS[0]}"
        else:
            text += f"{content}{PLAIN_ENDS[0]}"
    return text


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` followed by the assistant header the model answers after."""
    if has_chat_template(tokenizer):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return list(tokenizer.encode(_plain_text(messages)))


def fit_prompt(tokenizer, messages: list[dict], budget: int) -> tuple[list[int], bool]:
    """Render `messages` in at most `budget` tokens: drop the oldest turns, then cut the
    start of the last message (questions usually end with what is being asked).

    Returns the tokens and whether anything was cut.
    """
    tokens = render_prompt(tokenizer, messages)
    if len(tokens) <= budget:
        return tokens, False
    messages = [dict(m) for m in messages]
    while len(tokens) > budget and sum(m["role"] != "system" for m in messages) > 1:
        first = next(i for i, m in enumerate(messages) if m["role"] != "system")
        del messages[first]
        tokens = render_prompt(tokenizer, messages)
    last = messages[-1]
    while len(tokens) > budget:
        content_tokens = tokenizer.encode(last["content"], add_special_tokens=False)
        overflow = len(tokens) - budget
        if overflow >= len(content_tokens):
            raise LocomlxError(
                f"The prompt cannot fit in {budget} tokens even with its text removed; lower --max-tokens."
            )
        last["content"] = tokenizer.decode(content_tokens[overflow + 1 :])
        tokens = render_prompt(tokenizer, messages)
    return tokens, True


def render_example(tokenizer, instruction: str, input: str, output: str) -> tuple[list[int], int]:
    """Tokens of a whole training example and the index where the answer starts.

    Training computes the loss only from that index on, so the model learns the
    answer, not the question.
    """
    prompt = render_prompt(tokenizer, example_messages(instruction, input))
    messages = example_messages(instruction, input, output)
    if has_chat_template(tokenizer):
        full = list(tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True))
        if full[: len(prompt)] == prompt and len(full) > len(prompt):
            return full, len(prompt)
    # Templates that re-render earlier turns differently, and the plain layout ("Answer:" then a space):
    # answer tokens appended to the prompt.
    answer = list(tokenizer.encode(output if has_chat_template(tokenizer) else f" {output.strip()}",
                                   add_special_tokens=False))
    eos = tokenizer.eos_token_id
    return prompt + answer + ([eos] if eos is not None else []), len(prompt)


def length_counter(tokenizer):
    """Token count of each example in this format: what the data checks compare with --max-seq-length."""
    return lambda examples: [len(render_example(tokenizer, e.instruction, e.input, e.output)[0]) for e in examples]
