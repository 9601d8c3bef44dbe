// SadTalker tab: the host calls switch_to_sadtalker() after "Send to SadTalker" (paste-button binding),
// submit_sadtalker() starts the host progress bar for a Generate click, with the host's live preview (the
// newest rendered frame) over the result box.

function sadtalkerTabButton() {
    var app = gradioApp();
    var panel = app.querySelector('#tab_sadtalker');
    var buttons = Array.from(app.querySelectorAll('#tabs > .tab-nav > button, #tabs > div > .tab-nav > button'));
    if (panel && buttons.length) {
        // same position among the tab panels as among the buttons (tab order is user-configurable)
        var panels = Array.from(panel.parentElement.children).filter(function(el) {
            return el.classList.contains('tabitem');
        });
        var index = panels.indexOf(panel);
        if (index >= 0 && index < buttons.length && buttons[index].textContent.trim() === 'SadTalker') {
            return buttons[index];
        }
    }
    // newer gradio renders tab panels lazily and keeps hidden copies of the buttons for its overflow menu
    var all = Array.from(app.querySelectorAll('#tabs [role="tab"]'))
        .concat(Array.from(app.querySelectorAll('#tabs button')));
    return all.find(function(b) { return b.textContent.trim() === 'SadTalker' && b.offsetParent !== null; })
        || null;
}

function switch_to_sadtalker() {
    var button = sadtalkerTabButton();
    if (button) button.click();
    return Array.from(arguments);
}

function submit_sadtalker() {
    var args = Array.from(arguments);
    if (typeof randomId === 'function' && typeof requestProgress === 'function') {
        var id = randomId();
        var result = gradioApp().getElementById('sadtalker_result');
        requestProgress(id, result, result, function() {});
        args[0] = id;
    }
    return args;
}

if (typeof onUiLoaded === 'function') {
    onUiLoaded(function() {
        gradioApp().querySelectorAll('[id$="_send_to_sadtalker"]').forEach(function(button) {
            button.title = 'Send image to the SadTalker tab';
        });
    });
}
